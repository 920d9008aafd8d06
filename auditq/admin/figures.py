"""The dashboard's figures: broker queue depth, workers online, undelivered changes, lag.

Every figure is read on demand with bounded work: one broker round trip with short
timeouts (the queue depth), the workers' heartbeat rows (no broadcast ping: it would wait
for its whole timeout), the outbox (small by design), and the most recent entries through
the ``occurred_at`` index. Nothing here may fail the page: a broker that is down is shown
as unreachable.
"""

from __future__ import annotations

import datetime
import logging
import statistics
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from auditq import conf, operations, registry
from auditq.consumers import counters
from auditq.delivery import heartbeat
from auditq.delivery.relay import backlog as outbox_backlog
from auditq.delivery.relay import oldest as outbox_oldest
from auditq.models import AuditEntry, CallbackRun, OperationRun

logger = logging.getLogger("auditq")

BROKER_TIMEOUT = 1.0
"""Seconds the dashboard waits for the broker before calling it unreachable."""
BACKLOG_WARN_AFTER = datetime.timedelta(seconds=10)
"""An undelivered change older than this is late: workers record one in well under a second."""


@dataclass(frozen=True)
class QueueDepth:
    """Messages waiting in auditq's Celery queue."""

    queue: str
    """The queue's name (``AUDITQ["QUEUE"]`` or Celery's default queue)."""
    messages: int | None
    """Messages waiting; ``None`` when unknown (see ``status``)."""
    status: str
    """``"ok"``, ``"n/a"`` (the transport is neither Redis nor AMQP) or ``"unreachable"``."""


@dataclass(frozen=True)
class Workers:
    """Celery workers whose heartbeat is recent (see :mod:`auditq.delivery.heartbeat`)."""

    names: tuple[str, ...]
    """Their node names."""
    last_seen: datetime.datetime | None
    """Their most recent heartbeat; ``None`` when none is recent."""
    within: datetime.timedelta = heartbeat.ALIVE_WITHIN
    """How recent a heartbeat must be."""

    @property
    def within_seconds(self) -> int:
        """``within`` in whole seconds, for the page."""
        return int(self.within.total_seconds())

    @property
    def status(self) -> str:
        """``"ok"`` (at least one worker is alive) or ``"none"``."""
        return "ok" if self.names else "none"

    @property
    def level(self) -> str:
        """``"ok"`` or ``"alert"``: nobody records the changes while no worker is alive."""
        return "ok" if self.names else "alert"


@dataclass(frozen=True)
class Backlog:
    """Committed changes whose outbox row no worker has recorded yet."""

    rows: int
    """Undelivered outbox rows (one per committed transaction)."""
    oldest_age: datetime.timedelta | None
    """Age of the oldest row; ``None`` when there is none."""

    @property
    def level(self) -> str:
        """``"ok"``, ``"warn"`` (late) or ``"alert"`` (older than ``RELAY_AFTER_SECONDS``)."""
        if self.oldest_age is None or self.oldest_age < BACKLOG_WARN_AFTER:
            return "ok"
        relay_after = datetime.timedelta(seconds=conf.get().RELAY_AFTER_SECONDS)
        return "alert" if self.oldest_age >= relay_after else "warn"


@dataclass(frozen=True)
class PendingCounters:
    """Counter-cache deltas recorded by workers and not yet applied to their parents."""

    declared: int
    """How many counters are declared (no block at all when there are none)."""
    deltas: int
    """Deltas waiting for a flush."""
    oldest_age: datetime.timedelta | None
    """Age of the oldest; ``None`` when none waits."""
    undelivered: int = 0
    """Outbox rows not recorded yet, read just before the deltas: they may hold more
    deltas, which only a worker can tell (so "up to date" is said only when none waits)."""

    @property
    def level(self) -> str:
        """``"ok"``, or ``"warn"`` when a delta waits past the flush that should take it."""
        if self.oldest_age is None:
            return "ok"
        due = datetime.timedelta(seconds=conf.get().COUNTER_DELAY_SECONDS * 4 + 2)
        return "warn" if self.oldest_age > due + BACKLOG_WARN_AFTER else "ok"


@dataclass(frozen=True)
class Lag:
    """Commit-to-recorded delay of the most recent entries."""

    sample: int
    """How many recent entries were measured."""
    median: datetime.timedelta | None
    """Median ``recorded_at - occurred_at``; ``None`` without entries."""
    worst: datetime.timedelta | None
    """Largest delay in the sample."""


def _broker_options(app: Any) -> dict[str, Any]:
    return {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": BROKER_TIMEOUT,  # Redis
        "socket_connect_timeout": BROKER_TIMEOUT,
        "read_timeout": BROKER_TIMEOUT,  # AMQP
        "write_timeout": BROKER_TIMEOUT,
        "max_retries": 0,
    }


DEPTH_TRANSPORTS = ("redis", "amqp")
"""Transports whose ``queue_declare(passive=True)`` is one round trip that counts the
queue's ready messages (Redis: the list's length; AMQP: ``message_count``)."""


def queue_depth(app: Any = None) -> QueueDepth:
    """Count the messages waiting in auditq's queue, when the broker is Redis or AMQP
    (RabbitMQ): messages delivered to a worker and not yet acknowledged are not counted.

    Other transports report ``"n/a"``: their depth is not one cheap, reliable read.
    """
    app = app or current_app
    name = conf.get().QUEUE or app.conf.task_default_queue
    try:
        with app.connection_for_read(
            connect_timeout=BROKER_TIMEOUT, transport_options=_broker_options(app)
        ) as connection:
            if connection.transport.driver_type not in DEPTH_TRANSPORTS:
                return QueueDepth(name, None, "n/a")
            try:
                declared = connection.default_channel.queue_declare(queue=name, passive=True)
            except connection.channel_errors:
                # A queue that does not exist holds nothing: Redis drops an empty list,
                # and RabbitMQ has none before the first publish or worker declares it.
                return QueueDepth(name, 0, "ok")
            return QueueDepth(name, declared.message_count, "ok")
    except Exception as exc:
        logger.warning("auditq: dashboard could not read the broker queue %r: %s", name, exc)
        return QueueDepth(name, None, "unreachable")


def workers(now: datetime.datetime | None = None) -> Workers:
    """The workers whose heartbeat is younger than ``heartbeat.ALIVE_WITHIN``."""
    alive = heartbeat.alive(now)
    return Workers(tuple(name for name, _ in alive), max((at for _, at in alive), default=None))


def unrecorded(now: datetime.datetime | None = None) -> datetime.timedelta | None:
    """The age of the oldest undelivered change when no worker is alive to record it, for
    the trail's banner; else ``None``. One index probe of the outbox when it is empty (the
    usual case), and the heartbeat rows only when it is not: no count."""
    oldest = outbox_oldest()
    if oldest is None or heartbeat.alive(now):
        return None
    return max((now or timezone.now()) - oldest, datetime.timedelta(0))


def backlog(now: datetime.datetime | None = None) -> Backlog:
    """Count the undelivered outbox rows and tell the age of the oldest."""
    rows, oldest = outbox_backlog()
    age = None if oldest is None else (now or timezone.now()) - oldest
    return Backlog(rows, age)


def pending_counters(now: datetime.datetime | None = None) -> PendingCounters:
    """Count the counter deltas waiting for a flush and tell the age of the oldest."""

    declared = len(registry.counters())
    if not declared:
        return PendingCounters(0, 0, None)
    # The outbox first: a change it no longer holds has its deltas among those read next.
    undelivered, _ = outbox_backlog()
    deltas, oldest = counters.pending(DEFAULT_DB_ALIAS)
    age = None if oldest is None else (now or timezone.now()) - oldest
    return PendingCounters(declared, deltas, age, undelivered)


def lag(sample: int = 100) -> Lag:
    """Measure the commit-to-recorded delay of the ``sample`` most recent entries."""
    delays = [
        recorded - occurred
        for occurred, recorded in AuditEntry.objects.order_by("-occurred_at").values_list(
            "occurred_at", "recorded_at"
        )[:sample]
    ]
    if not delays:
        return Lag(0, None, None)
    return Lag(len(delays), statistics.median_low(delays), max(delays))


@dataclass(frozen=True)
class FailedCallbacks:
    """Callback runs that gave up, for the dashboard."""

    handlers: int
    """How many handlers are registered (no block at all when there are none)."""
    count: int
    """Runs that failed for good."""
    newest: list[Any]
    """The newest of them."""
    pending: int
    """Runs waiting for their (next) attempt."""


def failed_callbacks(newest: int = 5) -> FailedCallbacks:
    """The failed callback runs: how many, and the newest ones."""

    failed = CallbackRun.objects.filter(status=CallbackRun.Status.FAILED)
    return FailedCallbacks(
        handlers=len(registry.handlers()),
        count=failed.count(),
        newest=list(failed.order_by("-finished_at", "-id")[:newest]),
        pending=CallbackRun.objects.filter(status=CallbackRun.Status.PENDING).count(),
    )


@dataclass(frozen=True)
class FailedOperations:
    """Operation runs that failed, for the dashboard."""

    operations: int
    """How many operations are defined (no block at all when none is and no run exists)."""
    count: int
    """Runs that failed (retries used up, or a mistake in the operation)."""
    newest: list[Any]
    """The newest of them."""
    pending: int
    """Runs waiting for their next step, or running one."""
    going: list[Any]
    """The newest of those, with their progress."""


def failed_operations(newest: int = 5) -> FailedOperations:
    """The failed operation runs: how many, and the newest ones."""

    Status = OperationRun.Status
    failed = OperationRun.objects.filter(status=Status.FAILED)
    going = OperationRun.objects.filter(status__in=[Status.PENDING, Status.RUNNING])
    return FailedOperations(
        operations=len(operations.operations()),
        count=failed.count(),
        newest=list(failed.order_by("-finished_at", "-id")[:newest]),
        pending=going.count(),
        going=list(going.order_by("-created_at", "-id")[:newest]),
    )
