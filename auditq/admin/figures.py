"""The dashboard's figures: broker queue depth, workers online, undelivered changes, lag.

Every figure is read on demand with bounded work: broker round trips with short timeouts
(the worker ping is cached for a few seconds), the outbox (small by design), and the most
recent entries through the ``occurred_at`` index. Nothing here may fail the page: a broker
that is down is shown as unreachable.
"""

from __future__ import annotations

import datetime
import logging
import statistics
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from auditq import conf, operations, registry
from auditq.consumers import counters
from auditq.delivery.relay import backlog as outbox_backlog
from auditq.models import AuditEntry, CallbackRun, OperationRun

logger = logging.getLogger("auditq")

BROKER_TIMEOUT = 1.0
"""Seconds the dashboard waits for the broker before calling it unreachable."""
PING_TIMEOUT = 0.5
"""Seconds the dashboard waits for workers to answer a ping."""
WORKERS_CACHE_SECONDS = 10
"""How long a ping's answer is reused: pages reload often, workers come and go rarely."""
WORKERS_CACHE_KEY = "auditq:dashboard:workers"
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
    """``"ok"``, ``"n/a"`` (the transport is not Redis) or ``"unreachable"``."""


@dataclass(frozen=True)
class Workers:
    """Celery workers that answered a ping."""

    names: tuple[str, ...]
    """Their host names."""
    status: str
    """``"ok"`` (at least one answered), ``"none"`` or ``"unreachable"`` (the broker)."""
    checked_at: datetime.datetime
    """When they were pinged (the answer is cached for ``WORKERS_CACHE_SECONDS``)."""

    @property
    def level(self) -> str:
        """``"ok"`` or ``"alert"``: nobody records the changes while no worker answers."""
        return "ok" if self.status == "ok" else "alert"


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
        "socket_timeout": BROKER_TIMEOUT,
        "socket_connect_timeout": BROKER_TIMEOUT,
        "max_retries": 0,
    }


def queue_depth(app: Any = None) -> QueueDepth:
    """Count the messages waiting in auditq's queue, when the broker is Redis.

    Other transports report ``"n/a"``: their depth is not one cheap, reliable read.
    """
    app = app or current_app
    name = conf.get().QUEUE or app.conf.task_default_queue
    try:
        with app.connection_for_read(
            connect_timeout=BROKER_TIMEOUT, transport_options=_broker_options(app)
        ) as connection:
            if connection.transport.driver_type != "redis":
                return QueueDepth(name, None, "n/a")
            try:
                declared = connection.default_channel.queue_declare(queue=name, passive=True)
            except connection.channel_errors:
                # Redis drops an empty list: a queue that does not exist holds nothing.
                return QueueDepth(name, 0, "ok")
            return QueueDepth(name, declared.message_count, "ok")
    except Exception as exc:
        logger.warning("auditq: dashboard could not read the broker queue %r: %s", name, exc)
        return QueueDepth(name, None, "unreachable")


def workers(app: Any = None) -> Workers:
    """Ping the workers, or reuse an answer younger than ``WORKERS_CACHE_SECONDS``."""
    cached = cache.get(WORKERS_CACHE_KEY)
    if isinstance(cached, Workers):
        return cached
    app = app or current_app
    try:
        with app.connection_for_write(
            connect_timeout=BROKER_TIMEOUT, transport_options=_broker_options(app)
        ) as connection:
            replies = app.control.ping(timeout=PING_TIMEOUT, connection=connection) or []
        names = tuple(sorted(name for reply in replies for name in reply))
        found = Workers(names, "ok" if names else "none", timezone.now())
    except Exception as exc:
        logger.warning("auditq: dashboard could not ping the workers: %s", exc)
        found = Workers((), "unreachable", timezone.now())
    cache.set(WORKERS_CACHE_KEY, found, WORKERS_CACHE_SECONDS)
    return found


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
    deltas, oldest = counters.pending(DEFAULT_DB_ALIAS)
    age = None if oldest is None else (now or timezone.now()) - oldest
    return PendingCounters(declared, deltas, age)


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


def failed_operations(newest: int = 5) -> FailedOperations:
    """The failed operation runs: how many, and the newest ones."""

    Status = OperationRun.Status
    failed = OperationRun.objects.filter(status=Status.FAILED)
    return FailedOperations(
        operations=len(operations.operations()),
        count=failed.count(),
        newest=list(failed.order_by("-finished_at", "-id")[:newest]),
        pending=OperationRun.objects.filter(status__in=[Status.PENDING, Status.RUNNING]).count(),
    )
