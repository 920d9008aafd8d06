"""Running one step at most once at a time: leases, retries, the run's next step."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from auditq.delivery.backoff import retry_delay
from auditq.models import OperationRun, StepRun
from auditq.operations.catalog import OperationError, get
from auditq.operations.definition import Operation, Step, StepFunction
from auditq.operations.publishing import publish_after_commit
from auditq.stream import sealing
from auditq.stream.context import KnownActor, audit_context

logger = logging.getLogger("auditq")


@dataclass
class _Attempt:
    run: OperationRun
    operation: Operation
    func: StepFunction
    step_run_id: int
    lease: str


class _LeaseLost(Exception):
    """The attempt outlived its lease and another worker took the step over."""


def run(run_id: int, using: str) -> str:
    """Run the due step of one run, at most once at a time; return what happened."""
    attempt = _begin(run_id, using)
    if isinstance(attempt, str):
        return attempt
    step = Step(attempt.run, attempt.operation)
    try:
        # What the step changes in audited models is attributed to the run, and to the
        # user who started it (known by key and name: no query).
        found = attempt.run
        run_name = f"{found.name} #{found.pk}"
        who: dict[str, Any] = {}
        if found.actor_id is not None:
            who["actor"] = KnownActor(found.actor_id, found.actor_repr)
        with transaction.atomic(using=using), audit_context(**who, via_operation=run_name):
            attempt.func(step)
            return _succeeded(attempt, step, using)
    except _LeaseLost:
        logger.warning("auditq: %s outlived its lease; its writes were rolled back.", attempt.run)
        return "lease lost"
    except Exception as exc:
        # The masked values the step could quote (its arguments and values, by name) are
        # scrubbed from what is stored and logged, as a callback's are.
        masked = sealing.masked_values([attempt.run.params, attempt.run.values, step.values])
        error = sealing.scrub(f"{type(exc).__name__}: {exc}", masked)
        return _failed(attempt, exc, error, sealing.scrub(traceback.format_exc(), masked), using)


def _begin(run_id: int, using: str) -> _Attempt | str:
    """Take the lease on the run's due step and write its ``StepRun`` (committed)."""

    Status = OperationRun.Status
    with transaction.atomic(using=using):
        found = OperationRun.objects.using(using).select_for_update().filter(pk=run_id).first()
        if found is None:
            return "missing"
        now = timezone.now()
        if found.status == Status.RUNNING:
            if found.leased_until is not None and found.leased_until > now:
                return "leased"  # another delivery is running it
            lost = StepRun.objects.using(using).filter(run=found, status=StepRun.Status.RUNNING)
            lost.update(
                status=StepRun.Status.FAILED,
                finished_at=now,
                error="LeaseExpired: the worker running this step stopped, or the step "
                "outlived its lease; its writes were rolled back.",
            )
        elif found.status != Status.PENDING or found.next_attempt_at > now:
            return found.status
        try:
            operation = get(found.name, found.step)
            found.position = operation.locate(found.branch, found.step, found.position)
        except OperationError as exc:
            _give_up(found, f"OperationError: {exc}", "", now)
            return found.status
        func = operation.branches[found.branch][found.position]
        if found.status == Status.RUNNING and found.attempts > operation.policy(func).retries:
            _give_up(found, f"LeaseExpired: {found.step} never finished.", "", now)
            return found.status
        found.attempts += 1
        found.status = Status.RUNNING
        found.lease = uuid.uuid4().hex
        found.leased_until = now + datetime.timedelta(seconds=operation.lease)
        found.published_at = None
        found.started_at = found.started_at or now
        found.save()
        step_run = StepRun.objects.using(using).create(
            run=found,
            branch=found.branch,
            position=found.position,
            step=found.step,
            attempt=found.attempts,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            started_at=now,
        )
    return _Attempt(found, operation, func, step_run.pk, found.lease)


def _relock(attempt: _Attempt, using: str) -> OperationRun:
    """The run's row, locked, if this attempt still holds the lease.

    Raises:
        _LeaseLost: another worker took the step over.
    """

    found = OperationRun.objects.using(using).select_for_update().get(pk=attempt.run.pk)
    if found.lease != attempt.lease:
        raise _LeaseLost
    found.lease, found.leased_until = "", None
    return found


def _succeeded(attempt: _Attempt, step: Step, using: str) -> str:
    """In the step's transaction: record its success and move the run on."""

    found = _relock(attempt, using)
    now = timezone.now()
    StepRun.objects.using(using).filter(pk=attempt.step_run_id).update(
        status=StepRun.Status.SUCCEEDED, finished_at=now
    )
    found.values = step.values
    found.error = found.traceback = ""
    if step.reported is not None:
        found.progress_done = step.reported[0]
        if step.reported[1] is not None:
            found.progress_total = step.reported[1]
    # A jump_to wins over the next step of the branch: the default never overwrites it.
    branch, position = step.next or (found.branch, found.position + 1)
    paths = attempt.operation.paths[branch]
    if found.status == OperationRun.Status.CANCELLED:
        pass  # cancelled while the step ran: its work stands, nothing runs after it
    elif position >= len(paths):
        found.status = OperationRun.Status.SUCCEEDED
        found.finished_at = now
    else:
        found.branch, found.position, found.step = branch, position, paths[position]
        found.status = OperationRun.Status.PENDING
        found.attempts = 0
        found.next_attempt_at = now
        found.published_at = None
        publish_after_commit([found.pk], using)
    found.save()
    return found.status


def _failed(attempt: _Attempt, exc: Exception, error: str, trace: str, using: str) -> str:
    """The step raised (its writes are rolled back): retry it later, or fail the run.
    ``error`` and ``trace`` come scrubbed."""

    with transaction.atomic(using=using):
        try:
            found = _relock(attempt, using)
        except _LeaseLost:
            return "lease lost"
        now = timezone.now()
        StepRun.objects.using(using).filter(pk=attempt.step_run_id).update(
            status=StepRun.Status.FAILED, finished_at=now, error=error, traceback=trace
        )
        policy = attempt.operation.policy(attempt.func)
        if found.status == OperationRun.Status.CANCELLED:
            found.save()
        elif isinstance(exc, OperationError) or found.attempts > policy.retries:
            _give_up(found, error, trace, now)
        else:
            found.status = OperationRun.Status.PENDING
            found.error, found.traceback = error, trace
            found.next_attempt_at = now + retry_delay(found.attempts, policy.backoff)
            found.published_at = None
            found.save()
            logger.warning("auditq: %s failed (attempt %d): %s", found, found.attempts, error)
    return found.status


def _give_up(found: OperationRun, error: str, trace: str, now: datetime.datetime) -> None:
    found.status = found.Status.FAILED
    found.error, found.traceback = error, trace
    found.lease, found.leased_until = "", None
    found.finished_at = now
    found.save()
    logger.error("auditq: %s failed at %s: %s", found, found.step, error)


def unresolved(using: str) -> list[tuple[str, str, str, int, str]]:
    """``(operation, branch, step, runs, why)`` for each step that unfinished runs wait
    for and that no longer resolves (renamed code, a removed branch)."""

    Status = OperationRun.Status
    waiting = (
        OperationRun.objects.using(using)
        .filter(status__in=[Status.PENDING, Status.RUNNING, Status.FAILED])
        .values_list("name", "branch", "step")
        .annotate(runs=Count("id"))
        .order_by("name", "branch", "step")
    )
    found = []
    for name, branch, path, count in waiting:
        try:
            get(name, path).locate(branch, path)
        except OperationError as exc:
            found.append((name, branch, path, count, str(exc)))
    return found
