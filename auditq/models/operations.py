"""Operation runs (``OperationRun``) and their step attempts (``StepRun``)."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models, transaction
from django.dispatch import Signal
from django.utils import timezone

operation_runs_due = Signal()
"""Sent after the commit of a :meth:`OperationRunQuerySet.retry` that made runs due now,
with ``ids`` and ``using``: the operations' publisher sends their steps at once."""


class OperationRunQuerySet(models.QuerySet):
    """Retrying and cancelling runs, from code and from the admin."""

    def retry(self) -> int:
        """Resume failed runs at their failed step, with a fresh set of retries, and make
        runs waiting for a retry due now; return how many. Published after commit."""
        Status = OperationRun.Status
        using = self.db
        now = timezone.now()
        ids = list(
            self.filter(status__in=[Status.FAILED, Status.PENDING]).values_list("pk", flat=True)
        )
        rows = OperationRun.objects.using(using).filter(pk__in=ids)
        count = rows.filter(status=Status.FAILED).update(
            status=Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            published_at=None,
            finished_at=None,
        )
        count += rows.filter(status=Status.PENDING, next_attempt_at__gt=now).update(
            next_attempt_at=now, published_at=None
        )
        if count:
            transaction.on_commit(
                lambda: operation_runs_due.send(OperationRun, ids=ids, using=using), using=using
            )
        return count

    def cancel(self) -> int:
        """Stop runs before their next step; return how many were pending, running or
        failed. A step running now finishes, and its writes commit."""
        Status = OperationRun.Status
        return self.filter(status__in=[Status.PENDING, Status.RUNNING, Status.FAILED]).update(
            status=Status.CANCELLED, finished_at=timezone.now(), published_at=None
        )


class OperationRun(models.Model):
    """One run of an ``auditq.operations.Operation``: where it stands and what it knows.

    ``branch``, ``position`` and ``step`` name the step that runs next (or runs now, or
    failed); a step's writes, its ``StepRun`` success and the move to the next step
    commit in one transaction.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=200, help_text="The operation's name.")
    key = models.CharField(
        max_length=255, blank=True, help_text="Deduplication key given to start(), if any."
    )
    params = models.JSONField(default=dict, blank=True, help_text="What start() was given.")
    values = models.JSONField(default=dict, blank=True, help_text="What the steps set.")
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.PENDING)
    branch = models.CharField(max_length=100, default="main")
    position = models.PositiveIntegerField(default=0, help_text="The step's index in its branch.")
    step = models.CharField(max_length=255, help_text="The step's dotted path.")
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts of the current step.")
    next_attempt_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    lease = models.CharField(max_length=32, blank=True, help_text="Token of the running attempt.")
    leased_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    progress_done = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="What the steps report done (step.progress())."
    )
    progress_total = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="What there is to do, when the steps know it."
    )
    # Who started it, kept as AuditEntry keeps its actor: no constraint, no cascade.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        help_text="The actor of the audit context start() was called in; its steps' too.",
    )
    actor_repr = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = OperationRunQuerySet.as_manager()

    class Meta:
        verbose_name = "operation run"
        constraints = (
            models.UniqueConstraint(
                fields=["name", "key"], condition=~models.Q(key=""), name="auditq_operation_key"
            ),
        )
        indexes = (
            models.Index(fields=["status", "next_attempt_at"], name="auditq_operation_due"),
            models.Index(fields=["name", "status"], name="auditq_operation_name"),
        )

    def __str__(self) -> str:
        return f"{self.name} #{self.pk} ({self.status})"

    @property
    def progress(self) -> float | None:
        """The share done, 0.0 to 1.0, as the steps last reported it with
        ``step.progress(done, total)``; ``None`` until they report a total."""
        if self.progress_done is None or not self.progress_total:
            return None
        return min(self.progress_done / self.progress_total, 1.0)

    def retry(self) -> bool:
        """Resume a failed run at the step that failed; return whether it was failed.

        Completed steps do not run again: the run keeps its values and its place.
        """
        done = OperationRun.objects.using(self._state.db).filter(pk=self.pk).retry()
        self.refresh_from_db()
        return done == 1

    def cancel(self) -> bool:
        """Stop the run before its next step; return whether it was still going or failed.

        A step running now finishes, and its writes commit; no step runs after it.
        """
        done = OperationRun.objects.using(self._state.db).filter(pk=self.pk).cancel()
        self.refresh_from_db()
        return done == 1


class StepRun(models.Model):
    """One attempt at one step of an ``OperationRun``: the path the run took."""

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(OperationRun, on_delete=models.CASCADE, related_name="steps")
    branch = models.CharField(max_length=100)
    position = models.PositiveIntegerField()
    step = models.CharField(max_length=255, help_text="The step's dotted path.")
    attempt = models.PositiveIntegerField(help_text="1 for the step's first attempt.")
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="Host and process id.")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "step run"
        ordering = ("run", "id")

    def __str__(self) -> str:
        return f"{self.step} attempt {self.attempt} ({self.status})"

    @property
    def duration(self) -> datetime.timedelta | None:
        """How long the attempt took; ``None`` while it runs (or if its worker died)."""
        return self.finished_at - self.started_at if self.finished_at else None
