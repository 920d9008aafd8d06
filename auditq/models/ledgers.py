"""What carries work to the workers and records it: the outbox (``Outbox``), the
callbacks' ledger (``CallbackRun``), pending counter deltas (``CounterDelta``) and the
workers' heartbeats (``WorkerHeartbeat``)."""

from __future__ import annotations

from django.db import connections, models, transaction
from django.utils import timezone

from auditq.stream import outbox
from auditq.stream.events import REPR_LIMIT, Event, loads


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
