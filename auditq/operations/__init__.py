"""Operations: multi-step background jobs whose progress lives in the database.

An :class:`Operation` is a named list of steps (``main``) plus optional branches. Each
step runs in its own Celery task (``auditq.tasks.run_operation_step``); an
``OperationRun`` row holds where the run stands and the values its steps set, and one
``StepRun`` row is written per attempt at a step: the path the run took.

How a step runs, so that it completes once:

1. A short transaction locks the run's row and takes a *lease*: the run becomes
   ``running`` with a token valid for ``lease`` seconds, and a ``StepRun`` is written. A
   second delivery of the same message finds the lease held and does nothing.
2. The step runs in a second transaction, which ends by locking the run's row again,
   checking that the lease is still this attempt's, marking the ``StepRun`` succeeded and
   moving the run to its next step. The step's own database writes commit with that
   success or not at all: a worker that dies mid-step leaves nothing of the step behind,
   and only that step runs again.
3. The next step is published after commit. Runs that are due but were never published
   (a broker outage), and runs whose lease expired (their worker died), are published by
   :func:`publish_due`, a sweeper run by the relay in the workers, by ``auditq_relay``
   and by the ``auditq.tasks.relay`` periodic task.

A failed step is retried with exponential back-off (``retries``/``backoff`` per operation,
or per step with :func:`retry_policy`); when the retries run out the run is ``failed``
and :meth:`auditq.models.OperationRun.retry` resumes it at that step.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import math
import os
import socket
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from django.db import IntegrityError, router, transaction
from django.db.models import Count, Model, Q, QuerySet
from django.utils import timezone

from auditq import conf
from auditq.stream.context import audit_context

if TYPE_CHECKING:
    from auditq.models import OperationRun

logger = logging.getLogger("auditq")

RUN = "auditq.tasks.run_operation_step"
RETRIES = 3
"""Default attempts after the first failed one, before a run is marked failed."""
BACKOFF = 2.0
"""Default seconds before the first retry; doubled at each retry, with jitter."""
LEASE = 300.0
"""Default seconds a step may run before another worker may take it over."""

StepFunction = Callable[["Step"], Any]
F = TypeVar("F", bound=Callable[..., Any])

_operations: dict[str, Operation] = {}
_MISSING: Any = object()


class OperationError(Exception):
    """A mistake in an operation's definition or in a ``jump_to``: the run fails at once,
    without retries (retrying cannot fix code)."""


@dataclass(frozen=True)
class RetryPolicy:
    """A step's own retry settings (see :func:`retry_policy`)."""

    retries: int
    """Attempts after the first failed one, before the run is marked failed."""
    backoff: float
    """Seconds before the first retry; doubled at each retry, with jitter."""


def _check_policy(retries: Any, backoff: Any, where: str) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
        raise ValueError(f"{where}: retries takes a whole number from 0 to 100, not {retries!r}.")
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, int | float)
        or not 0 < backoff <= 86400
    ):
        raise ValueError(f"{where}: backoff takes seconds, more than 0 and at most a day.")


@overload
def retry_policy(func: F, /) -> F: ...
@overload
def retry_policy(*, retries: int = RETRIES, backoff: float = BACKOFF) -> Callable[[F], F]: ...
def retry_policy(func: Any = None, /, *, retries: int = RETRIES, backoff: float = BACKOFF) -> Any:
    """Give one step its own retries and back-off, whatever its operation's say.

    Returns the function unchanged (it only gains an ``auditq_retry_policy`` attribute).

    Example:
        >>> @retry_policy(retries=10, backoff=30)
        ... def charge_card(step): ...
    """
    _check_policy(retries, backoff, "@retry_policy")

    def decorate(step_function: F) -> F:
        if not callable(step_function):
            raise TypeError(f"@retry_policy decorates step functions, not {step_function!r}.")
        step_function.auditq_retry_policy = RetryPolicy(retries, float(backoff))  # type: ignore[attr-defined]
        return step_function

    return decorate if func is None else decorate(func)


def dotted_path(func: Callable[..., Any]) -> str:
    """The name a step is stored under: ``module.qualname``."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def check_json(value: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is JSON data (dicts with string keys, lists,
    strings, finite numbers, booleans, ``None``), naming where the bad value is."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot hold.")
        return
    if isinstance(value, Model):
        raise TypeError(
            f"{where} is a model instance ({type(value).__name__} {value.pk!r}): pass its "
            f"key instead (e.g. {type(value).__name__.lower()}_id={value.pk!r}) and load "
            "the row in the step, so that the step sees the row as it is then."
        )
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}: JSON keys are strings.")
            check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which is not JSON-safe: pass strings, "
        "numbers, booleans, None, lists and dicts (a Decimal or a date as a string)."
    )


def _as_json(value: Any) -> Any:
    """The value as it reads back from the database (tuples become lists)."""
    if isinstance(value, list | tuple):
        return [_as_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _as_json(item) for key, item in value.items()}
    return value


class Operation:
    """A multi-step job: ``main`` and other branches, each a list of step functions.

    A step is a module-level function taking a :class:`Step`. Steps of ``main`` run in
    order; a step may ``jump_to`` another branch (or back to a step of ``main``); a
    branch that runs out ends the run. Operations are registered by name when they are
    created, so define them at module level in a module imported at start-up (say, from
    your ``AppConfig.ready()``).

    Args:
        name: a stable, unique name (stored on every run).
        main: the steps that run first, in order.
        retries: attempts after a failed one before the run is marked failed.
        backoff: seconds before the first retry; doubled at each retry, with jitter.
        lease: seconds a step may run before the run is taken over by another worker
            (as if its worker had died): make it longer than the step ever takes.
        queue: the Celery queue of its steps; default ``AUDITQ["QUEUE"]``.
        **branches: the other branches, by name.

    Example:
        >>> fulfillment = Operation(
        ...     "subscriptions.fulfillment",
        ...     main=[charge_card, send_receipt],
        ...     red=[setup_red_subscription],
        ... )
        >>> run = fulfillment.start(subscription_id=sub.id)
    """

    def __init__(
        self,
        name: str,
        main: Sequence[StepFunction],
        *,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        lease: float = LEASE,
        queue: str | None = None,
        **branches: Sequence[StepFunction],
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"Operation() takes a name of 1 to 200 characters, not {name!r}.")
        where = f"Operation({name!r})"
        _check_policy(retries, backoff, where)
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease <= 86400:
            raise ValueError(f"{where}: lease takes seconds, more than 0 and at most a day.")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ValueError(f"{where}: queue takes a queue name, not {queue!r}.")
        self.name = name
        self.retries = retries
        self.backoff = float(backoff)
        self.lease = float(lease)
        self.queue = queue
        self.branches: dict[str, tuple[StepFunction, ...]] = {}
        self.paths: dict[str, tuple[str, ...]] = {}
        for branch, steps in {"main": main, **branches}.items():
            if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
                raise ValueError(f"{where}: branch {branch!r} takes a non-empty list of steps.")
            for func in steps:
                path = dotted_path(func)
                if not callable(func) or "<" in path or len(path) > 255:
                    raise ValueError(
                        f"{where}: {func!r} in branch {branch!r} is not a module-level "
                        "function: steps are stored by their dotted path."
                    )
            self.branches[branch] = tuple(steps)
            self.paths[branch] = tuple(dotted_path(func) for func in steps)
        known = _operations.get(name)
        if known is not None and known.paths != self.paths:
            raise ValueError(f"{where}: another operation already has that name.")
        _operations[name] = self

    def __repr__(self) -> str:
        return f"<Operation {self.name!r}>"

    def start(self, *, key: str | None = None, **params: Any) -> OperationRun:
        """Create a run and publish its first step once the transaction commits.

        Args:
            key: a deduplication key: a second ``start()`` with the same key returns the
                first run (whatever its status) instead of starting another.
            **params: JSON data the steps read with ``step.get(name)``; pass model
                instances by their key.

        Returns:
            The ``OperationRun`` (``pending``), or the existing run with that ``key``.

        Raises:
            TypeError: a parameter is not JSON data (a model instance, a Decimal...).
        """
        from auditq.models import OperationRun

        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
            raise ValueError(f"{self.name}.start(key=...) takes 1 to 255 characters, not {key!r}.")
        for name, value in params.items():
            check_json(value, f"{self.name}.start() argument {name!r}")
        using = router.db_for_write(OperationRun)
        run = OperationRun(
            name=self.name,
            key=key or "",
            params=_as_json(params),
            branch="main",
            position=0,
            step=self.paths["main"][0],
        )
        try:
            # The unique constraint decides, not a look first: two starts racing with
            # the same key make one run (the loser waits for the winner's commit).
            with transaction.atomic(using=using):
                run.save(using=using, force_insert=True)
        except IntegrityError:
            if key is None:
                raise
            return OperationRun.objects.using(using).get(name=self.name, key=key)
        _publish_after_commit([run.pk], using)
        return run

    def locate(self, branch: str, path: str, position: int | None = None) -> int:
        """The index of step ``path`` in ``branch`` (``position`` first, if it matches).

        Raises:
            OperationError: no such branch, or no such step in it.
        """
        paths = self.paths.get(branch)
        if paths is None:
            raise OperationError(
                f"operation {self.name!r} has no branch {branch!r} "
                f"(its branches: {', '.join(self.paths)})."
            )
        if position is not None and position < len(paths) and paths[position] == path:
            return position
        if path not in paths:
            raise OperationError(
                f"step {path} is not in branch {branch!r} of operation {self.name!r} "
                "(renamed, moved or removed?)."
            )
        return paths.index(path)

    def policy(self, func: StepFunction) -> RetryPolicy:
        """The step's :func:`retry_policy`, else the operation's retries and back-off."""
        own = getattr(func, "auditq_retry_policy", None)
        return own if isinstance(own, RetryPolicy) else RetryPolicy(self.retries, self.backoff)


class Step:
    """What a step function receives: the run's data, and where to go next.

    ``get`` sees the arguments given to ``start()`` and every value set by earlier steps
    (a value set with the same name wins); ``set`` keeps a value for the steps after this
    one: it is saved when this step succeeds, with this step's own writes.
    """

    def __init__(self, run: OperationRun, operation: Operation) -> None:
        self.operation = operation
        self.run_id: int = run.pk
        """The run's key: a good idempotency key for calls to other systems."""
        self.attempt: int = run.attempts
        """1 for this step's first attempt, 2 for its first retry..."""
        self.branch: str = run.branch
        """The branch this step was started from."""
        self.values: dict[str, Any] = dict(run.values)
        self._params: dict[str, Any] = dict(run.params)
        self.next: tuple[str, int] | None = None
        """Where ``jump_to`` points; ``None``: the next step of this branch."""

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """A value set by an earlier step, else the ``start()`` argument of that name.

        Raises:
            KeyError: neither has it, and no ``default`` was given.
        """
        if key in self.values:
            return self.values[key]
        if key in self._params:
            return self._params[key]
        if default is not _MISSING:
            return default
        known = ", ".join(sorted({*self.values, *self._params})) or "none"
        raise KeyError(
            f"{key!r} is neither a start() argument nor a value set by a step (known: {known})."
        )

    def set(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON data) under ``key`` for later steps and for the admin.

        Raises:
            TypeError: the value is not JSON data.
        """
        if not isinstance(key, str) or not key:
            raise TypeError(f"step.set() takes a string key, not {key!r}.")
        check_json(value, f"step.set({key!r}) value")
        self.values[key] = _as_json(value)

    def jump_to(self, branch: str, step: StepFunction | None = None) -> None:
        """Make ``branch`` (its first step, or ``step``) the next step; this step goes on.

        Raises:
            OperationError: the branch, or the step in it, does not exist (the run fails).
        """
        if step is None:
            self.operation.locate(branch, self.operation.paths.get(branch, ("",))[0])
            self.next = (branch, 0)
        else:
            self.next = (branch, self.operation.locate(branch, dotted_path(step)))


def get(name: str, step: str = "") -> Operation:
    """The operation registered under ``name``; imports the module of ``step`` (a dotted
    path) first if none is, as a worker that never imported it needs.

    Raises:
        OperationError: no operation has that name.
    """
    if name not in _operations and step:
        parts = step.split(".")
        for end in range(len(parts) - 1, 0, -1):
            try:
                importlib.import_module(".".join(parts[:end]))
            except ImportError:
                continue
            break
    try:
        return _operations[name]
    except KeyError:
        raise OperationError(
            f"no operation named {name!r} is defined (is its module imported at start-up?)."
        ) from None


def operations() -> list[Operation]:
    """Every registered operation."""
    return list(_operations.values())


def _queue_of(name: str) -> str | None:
    found = _operations.get(name)
    return (found.queue if found else None) or conf.get().QUEUE


def _publish_after_commit(ids: list[int], using: str) -> None:
    transaction.on_commit(lambda: _publish_quietly(ids, using), using=using)


def _publish_quietly(ids: list[int], using: str) -> None:
    try:
        publish_due(using, ids=ids)
    except Exception as exc:  # the relay in the workers publishes them on its next round
        logger.warning("auditq: operation runs %s not published yet (%s)", ids, exc)


def publish_due(
    using: str, app: Any = None, connection: Any = None, *, ids: list[int] | None = None
) -> int:
    """Publish the runs whose next step is due, or whose lease expired; return how many.

    The relay's sweeper. A run is claimed before it is published and published again if
    still waiting ``RELAY_AFTER_SECONDS`` later.
    """
    from auditq.delivery import relay
    from auditq.models import OperationRun

    now = timezone.now()
    Status = OperationRun.Status
    due = OperationRun.objects.using(using).filter(
        Q(status=Status.PENDING, next_attempt_at__lte=now)
        | Q(status=Status.RUNNING, leased_until__lte=now),
    )
    if ids is not None:
        due = due.filter(pk__in=ids)
    return relay.publish_rows(
        due,
        task=RUN,
        label="name",
        queue_of=_queue_of,
        run_here=run,
        using=using,
        app=app,
        connection=connection,
    )


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
        # What the step changes in audited models is attributed to the run.
        run_name = f"{attempt.run.name} #{attempt.run.pk}"
        with transaction.atomic(using=using), audit_context(via_operation=run_name):
            attempt.func(step)
            return _succeeded(attempt, step, using)
    except _LeaseLost:
        logger.warning("auditq: %s outlived its lease; its writes were rolled back.", attempt.run)
        return "lease lost"
    except Exception as exc:
        return _failed(attempt, exc, traceback.format_exc(), using)


def _begin(run_id: int, using: str) -> _Attempt | str:
    """Take the lease on the run's due step and write its ``StepRun`` (committed)."""
    from auditq.models import OperationRun, StepRun

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
    from auditq.models import OperationRun

    found = OperationRun.objects.using(using).select_for_update().get(pk=attempt.run.pk)
    if found.lease != attempt.lease:
        raise _LeaseLost
    found.lease, found.leased_until = "", None
    return found


def _succeeded(attempt: _Attempt, step: Step, using: str) -> str:
    """In the step's transaction: record its success and move the run on."""
    from auditq.models import OperationRun, StepRun

    found = _relock(attempt, using)
    now = timezone.now()
    StepRun.objects.using(using).filter(pk=attempt.step_run_id).update(
        status=StepRun.Status.SUCCEEDED, finished_at=now
    )
    found.values = step.values
    found.error = found.traceback = ""
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
        _publish_after_commit([found.pk], using)
    found.save()
    return found.status


def _failed(attempt: _Attempt, exc: Exception, trace: str, using: str) -> str:
    """The step raised (its writes are rolled back): retry it later, or fail the run."""
    from auditq.models import OperationRun, StepRun

    error = f"{type(exc).__name__}: {exc}"
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
            from auditq.consumers.callbacks import retry_delay

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


def retry(runs: QuerySet[OperationRun]) -> int:
    """Resume failed runs at their failed step, with a fresh set of retries, and make
    runs waiting for a retry due now; return how many. Published after commit."""
    from auditq.models import OperationRun

    Status = OperationRun.Status
    using = runs.db
    now = timezone.now()
    ids = list(runs.filter(status__in=[Status.FAILED, Status.PENDING]).values_list("pk", flat=True))
    rows = OperationRun.objects.using(using).filter(pk__in=ids)
    count = rows.filter(status=Status.FAILED).update(
        status=Status.PENDING, attempts=0, next_attempt_at=now, published_at=None, finished_at=None
    )
    count += rows.filter(status=Status.PENDING, next_attempt_at__gt=now).update(
        next_attempt_at=now, published_at=None
    )
    if count:
        _publish_after_commit(ids, using)
    return count


def cancel(runs: QuerySet[OperationRun]) -> int:
    """Stop runs before their next step; return how many were pending, running or failed."""
    from auditq.models import OperationRun

    Status = OperationRun.Status
    return runs.filter(status__in=[Status.PENDING, Status.RUNNING, Status.FAILED]).update(
        status=Status.CANCELLED, finished_at=timezone.now(), published_at=None
    )


def unresolved(using: str) -> list[tuple[str, str, str, int, str]]:
    """``(operation, branch, step, runs, why)`` for each step that unfinished runs wait
    for and that no longer resolves (renamed code, a removed branch)."""
    from auditq.models import OperationRun

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
