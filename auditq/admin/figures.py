"""What the admin dashboard shows: broker queue depth, undelivered changes, throughput.

Every figure is read on demand with bounded work: one broker round trip with a short
timeout, the outbox (small by design), and the last 24 hours of entries through the
``occurred_at`` index. Nothing here may fail the page: a broker that is down is shown as
unreachable.
"""

from __future__ import annotations

import datetime
import logging
import statistics
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from auditq import conf, delivery
from auditq.models import AuditEntry

logger = logging.getLogger("auditq")

BROKER_TIMEOUT = 1.0
"""Seconds the dashboard waits for the broker before calling it unreachable."""


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
class Backlog:
    """Committed changes whose outbox row no worker has recorded yet."""

    rows: int
    """Undelivered outbox rows (one per committed transaction)."""
    oldest_age: datetime.timedelta | None
    """Age of the oldest row; ``None`` when there is none."""


@dataclass(frozen=True)
class Bar:
    """One minute of the throughput chart, in SVG user units."""

    x: int
    """Minutes since the start of the chart."""
    y: float
    """Top of the bar (the chart is ``Throughput.HEIGHT`` units high)."""
    height: float
    """Height of the bar."""
    label: str
    """Tooltip: the minute and its count."""


@dataclass(frozen=True)
class Throughput:
    """Entries per minute over a window ending now, ready for an inline SVG chart."""

    HEIGHT = 100

    minutes: int
    """Width of the window (and of the chart, one unit per minute)."""
    start: datetime.datetime
    """Start of the window."""
    bars: tuple[Bar, ...]
    """Non-empty minutes only."""
    total: int
    """Entries in the window."""
    peak: int
    """Most entries in one minute."""


@dataclass(frozen=True)
class Lag:
    """Commit-to-recorded delay of the most recent entries."""

    sample: int
    """How many recent entries were measured."""
    median: datetime.timedelta | None
    """Median ``recorded_at - occurred_at``; ``None`` without entries."""
    worst: datetime.timedelta | None
    """Largest delay in the sample."""


def queue_depth(app: Any = None) -> QueueDepth:
    """Count the messages waiting in auditq's queue, when the broker is Redis.

    Other transports report ``"n/a"``: their depth is not one cheap, reliable read.
    """
    app = app or current_app
    name = conf.get().QUEUE or app.conf.task_default_queue
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": BROKER_TIMEOUT,
        "socket_connect_timeout": BROKER_TIMEOUT,
        "max_retries": 0,
    }
    try:
        with app.connection_for_read(
            connect_timeout=BROKER_TIMEOUT, transport_options=options
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


def backlog(now: datetime.datetime | None = None) -> Backlog:
    """Summarise :func:`auditq.delivery.backlog` for display."""
    rows, oldest = delivery.backlog()
    age = None if oldest is None else (now or timezone.now()) - oldest
    return Backlog(rows, age)


def throughput(now: datetime.datetime | None = None, minutes: int = 24 * 60) -> Throughput:
    """Count entries per minute of change over the last ``minutes``.

    Bucketed by ``occurred_at``, which is indexed, rather than ``recorded_at``, which is
    not: on a big table the chart must not scan it.
    """
    end = (now or timezone.now()).replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    start = end - datetime.timedelta(minutes=minutes)
    counts = (
        AuditEntry.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .annotate(minute=TruncMinute("occurred_at"))
        .order_by()
        .values_list("minute")
        .annotate(n=Count("id"))
    )
    per_minute = {minute: n for minute, n in counts}
    peak = max(per_minute.values(), default=0)
    bars = []
    for minute, n in sorted(per_minute.items()):
        height = Throughput.HEIGHT * n / peak
        label = f"{timezone.localtime(minute):%Y-%m-%d %H:%M}: {n}"
        x = int((minute - start).total_seconds() // 60)
        bars.append(Bar(x, round(Throughput.HEIGHT - height, 2), round(height, 2), label))
    return Throughput(minutes, start, tuple(bars), sum(per_minute.values()), peak)


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
