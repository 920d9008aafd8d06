"""auditq's tables: the trail (``AuditEntry``) and its hash chains (``AuditChain``), the
outbox that carries committed changes to the workers (``Outbox``), the callbacks' ledger
(``CallbackRun``), pending counter deltas (``CounterDelta``), and operation runs with
their step attempts (``OperationRun``, ``StepRun``)."""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connections, models, transaction
from django.dispatch import Signal
from django.utils import timezone

from auditq.diffs import DiffRow, diff_rows, title
from auditq.history import AuditEntryQuerySet
from auditq.revert import revert
from auditq.stream import outbox
from auditq.stream.events import REPR_LIMIT, Event, loads, m2m_keys


class AuditEntry(models.Model):
    """One create, update or delete of an audited object, written by a worker."""

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, editable=False)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_pk = models.CharField(max_length=255)
    object_repr = models.CharField(max_length=REPR_LIMIT, blank=True)
    action = models.CharField(max_length=6, choices=Action.choices)
    changes = models.JSONField(default=dict)
    # No database constraint and no cascade: deleting a user must neither delete nor
    # rewrite the trail; actor_id keeps the key and actor_repr the name.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_repr = models.CharField(max_length=255, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=200, blank=True)
    context = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    # db_default: rows inserted without it (chaining off) are unchained, "".
    chain_hash = models.CharField(
        max_length=64,
        blank=True,
        db_default="",
        editable=False,
        help_text="SHA-256 (hex) over this entry and the hash before it in its model's "
        "chain; empty on entries recorded before chaining or with AUDITQ['CHAIN'] off.",
    )
    chain_lane = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        editable=False,
        help_text="Which of its model's chains (lanes) the entry is in.",
    )

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        ordering = ("-occurred_at", "-id")
        indexes = (
            models.Index(
                fields=["content_type", "object_pk", "occurred_at"], name="auditq_entry_object"
            ),
            models.Index(fields=["content_type", "occurred_at"], name="auditq_entry_model"),
            models.Index(fields=["actor", "occurred_at"], name="auditq_entry_actor"),
            models.Index(fields=["occurred_at"], name="auditq_entry_time"),
            # The admin's exact object-key search, which has no model to start from.
            models.Index(fields=["object_pk", "occurred_at"], name="auditq_entry_key"),
        )

    def __str__(self) -> str:
        content_type = self.content_type
        return f"{self.action} {content_type.app_label}.{content_type.model} {self.object_pk}"

    @property
    def changed_fields(self) -> list[str]:
        """The names of the fields this entry changed."""
        return list(self.changes)

    @property
    def summary(self) -> str:
        """What happened, as a person says it: ``"Donation #53 changed by admin"``."""

        return title(self)

    def get_diff_display(self) -> list[DiffRow]:
        """Return the changes as rows a person reads: verbose field names, choice labels,
        and related objects' names (one query per related model)."""

        return diff_rows(self)

    def revert(self) -> models.Model:
        """Put back the values this ``update`` replaced (or restore the row this
        ``delete`` removed) as a new, audited change whose ``context["reverted"]`` is this
        entry's id; return the object.

        Raises:
            auditq.RevertConflict: a field changed since, or a value it needs (masked,
                kept as a repr) was never kept; ``conflict.fields`` names them.
            ValueError: a create (delete the object instead), or a model that is gone.
        """
        return revert(self)

    def get_changes_display(self) -> list[tuple[str, Any, Any]]:
        """Return ``(field, old, new)`` rows; many-to-many rows hold removed and added keys."""
        rows = []
        for name, change in self.changes.items():
            m2m = m2m_keys(change)
            if m2m is not None:
                rows.append((name, *m2m))
            else:
                rows.append((name, change[0], change[1]))
        return rows


class AuditChain(models.Model):
    """One model's trail: its last verification. The trail is woven of up to
    :data:`LANES` hash chains (:class:`AuditChainLane`), so that concurrent workers record
    one model's entries side by side."""

    content_type = models.OneToOneField(
        ContentType, on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_entries = models.BigIntegerField(default=0)
    unchained_entries = models.BigIntegerField(
        default=0, help_text="Entries recorded before the chain started, at the last check."
    )
    broken_entry_id = models.BigIntegerField(
        null=True, blank=True, help_text="The first entry where the last check found a break."
    )
    problem = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "audit chain"

    def __str__(self) -> str:
        content_type = self.content_type
        return f"chain of {content_type.app_label}.{content_type.model}"

    @property
    def intact(self) -> bool | None:
        """The last verification's verdict; ``None`` before the first."""
        return None if self.verified_at is None else self.broken_entry_id is None


LANES = 8
"""The chains (lanes) of one model: a recording transaction locks one lane of each of its
models, a free one if any, so up to this many record one model at once."""


class AuditChainLane(models.Model):
    """One of a model's hash chains: its head (what the next entry links to) and its prune
    anchor. The recording worker locks the row while it extends the lane, so the lane's
    entries are in key order."""

    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    lane = models.PositiveSmallIntegerField()
    last_hash = models.CharField(max_length=64, blank=True, default="")
    last_entry_id = models.BigIntegerField(null=True, blank=True)
    anchor_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="The last pruned entry's hash."
    )
    anchor_entry_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "audit chain lane"
        constraints = (
            models.UniqueConstraint(fields=["content_type", "lane"], name="auditq_chain_lane"),
        )

    def __str__(self) -> str:
        content_type = self.content_type
        return f"lane {self.lane} of {content_type.app_label}.{content_type.model}"


class OutboxQuerySet(models.QuerySet):
    """Set-aside rows, retried by hand."""

    def set_aside(self) -> OutboxQuerySet:
        """The rows a worker could not record: kept with their error, skipped until retried."""
        return self.filter(failed_at__isnull=False)

    def waiting(self) -> OutboxQuerySet:
        """The rows the workers will record (every row not set aside)."""
        return self.filter(failed_at__isnull=True)

    def retry(self) -> int:
        """Hand set-aside rows back to the workers, as if just committed; return how many.

        A row that fails again is set aside again, with the new error.
        """
        using = self.db
        count = self.set_aside().update(failed_at=None, error="", relayed_at=None)
        if count:
            # Eager mode (tests, scripts) records them at once; workers find them anyway.
            transaction.on_commit(lambda: outbox.committed(connections[using]), using=using)
        return count


class Outbox(models.Model):
    """One committed transaction's changes, waiting for a worker to record them."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    relayed_at = models.DateTimeField(null=True, blank=True)
    payload = models.TextField(help_text="The transaction's events, as JSON text.")
    key = models.TextField(
        blank=True,
        db_default="",
        help_text="The key the database assigned to a lone create's row, as text; "
        "the payload marks where it goes.",
    )
    # db_default: the outbox function and the portable INSERT name only the columns above.
    error = models.TextField(
        blank=True,
        db_default="",
        help_text="Why the last worker that took the row could not record it.",
    )
    failed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the row was set aside: skipped by the workers until retried.",
    )

    objects = OutboxQuerySet.as_manager()

    class Meta:
        verbose_name = "outbox row"
        verbose_name_plural = "outbox"

    def __str__(self) -> str:
        return f"outbox row {self.pk}"

    @property
    def events(self) -> list[Event]:
        """The transaction's events, decoded (see :mod:`auditq.stream.events`)."""
        return loads(self.payload, self.key)


class CallbackRun(models.Model):
    """One ``@after_save`` / ``@after_delete`` handler's work for one change: its ledger.

    Unique by (handler, event): the row is created once however often the change is
    delivered, and it is marked succeeded in the transaction that commits the handler's
    own writes, so a redelivered task finds it done.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "skipped"

    id = models.BigAutoField(primary_key=True)
    handler = models.CharField(max_length=255, help_text="The handler's dotted path.")
    event_id = models.UUIDField(help_text="The change's id (its audit entry's event_id).")
    model = models.CharField(max_length=100, help_text="app_label.modelname of the object.")
    object_pk = models.CharField(max_length=255)
    object_repr = models.CharField(max_length=REPR_LIMIT, blank=True)
    action = models.CharField(max_length=6)
    event = models.JSONField(help_text="The event the handler receives.")
    sealed = models.TextField(
        blank=True,
        default="",
        editable=False,
        help_text="The masked fields' values, sealed with a key derived from SECRET_KEY; "
        "emptied when the run succeeds or is skipped.",
    )
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    errors = models.JSONField(
        default=list, blank=True, help_text="Every failed attempt: when, error, traceback."
    )
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "callback run"
        constraints = (
            models.UniqueConstraint(fields=["handler", "event_id"], name="auditq_callback_once"),
        )
        indexes = (
            models.Index(fields=["status", "next_attempt_at"], name="auditq_callback_due"),
            models.Index(fields=["handler", "status"], name="auditq_callback_handler"),
        )

    def __str__(self) -> str:
        return f"{self.handler} for {self.model} {self.object_pk} ({self.status})"


class CounterDelta(models.Model):
    """A counter-cache change recorded by a worker and not yet applied to its parent row.

    Written in the transaction that consumes the change's outbox row (so once), applied
    and deleted in the transaction that updates the parent (so once): many rows for one
    parent become one ``UPDATE``.
    """

    id = models.BigAutoField(primary_key=True)
    parent = models.CharField(max_length=100, help_text="app_label.modelname of the parent.")
    key = models.CharField(max_length=255, help_text="The parent's key, as JSON text.")
    field = models.CharField(max_length=100, help_text="The counter column on the parent.")
    delta = models.DecimalField(max_digits=40, decimal_places=12)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "pending counter delta"

    def __str__(self) -> str:
        return f"{self.parent}.{self.field} {self.key} {self.delta:+}"


class WorkerHeartbeat(models.Model):
    """A Celery worker saying it is alive, every few seconds, from a thread of its own.

    The dashboard and the trail's banner read these rows: a broadcast ping would make
    each page wait for its whole timeout, since it cannot know how many answers to expect.
    """

    name = models.CharField(max_length=255, unique=True, help_text="The worker's node name.")
    seen_at = models.DateTimeField(help_text="Its last heartbeat.")

    class Meta:
        verbose_name = "worker heartbeat"

    def __str__(self) -> str:
        return f"{self.name} (seen {self.seen_at:%Y-%m-%d %H:%M:%S})"


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
