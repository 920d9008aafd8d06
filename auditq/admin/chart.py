"""The dashboard's throughput chart: entries per time bucket, laid out as SVG coordinates.

The window adapts to the data: it is the shortest of 10 minutes, 1 hour, 6 hours and
24 hours that holds the oldest entry of the last 24 hours, so a minute of activity fills
the chart instead of being a sliver of a day. Buckets are counted in the database,
grouped by ``occurred_at`` (indexed) truncated to the second or the minute; at most
1,440 groups come back, whatever the number of entries.
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from dataclasses import dataclass

from django.db.models import Count
from django.db.models.functions import TruncMinute, TruncSecond
from django.utils import timezone

from auditq.models import AuditEntry

WINDOWS = (
    (datetime.timedelta(minutes=10), datetime.timedelta(seconds=10)),
    (datetime.timedelta(hours=1), datetime.timedelta(minutes=1)),
    (datetime.timedelta(hours=6), datetime.timedelta(minutes=5)),
    (datetime.timedelta(hours=24), datetime.timedelta(minutes=15)),
)
"""``(window, bucket)`` pairs, shortest first; the last one is used when nothing is newer."""

WIDTH, HEIGHT = 720, 200
"""The SVG's coordinate system; the page scales it to its width."""
LEFT, RIGHT, TOP, BOTTOM = 44, 712, 10, 176
"""The plot area inside it: the y-axis labels on the left, the times below."""

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Bar:
    """One non-empty bucket."""

    x: float
    y: float
    width: float
    height: float
    label: str
    """Tooltip: the bucket's time span and its count."""


@dataclass(frozen=True)
class Tick:
    """A label on an axis, at ``x`` or ``y`` in SVG units."""

    at: float
    label: str
    anchor: str = "end"
    """SVG ``text-anchor`` of the label."""


@dataclass(frozen=True)
class Chart:
    """Entries per bucket over a window ending now."""

    window: datetime.timedelta
    bucket: datetime.timedelta
    start: datetime.datetime
    end: datetime.datetime
    bars: tuple[Bar, ...]
    """Non-empty buckets only."""
    total: int
    """Entries in the window."""
    peak: int
    """Most entries in one bucket."""
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]

    WIDTH = WIDTH
    HEIGHT = HEIGHT
    LEFT, RIGHT, TOP, BOTTOM = LEFT, RIGHT, TOP, BOTTOM

    @property
    def per(self) -> str:
        """The bucket, said: ``"10 seconds"``, ``"minute"``."""
        return _say(self.bucket)

    @property
    def window_said(self) -> str:
        """The window, said: ``"10 minutes"``, ``"24 hours"``."""
        return _say(self.window)

    @property
    def title(self) -> str:
        """``"Entries per 10 seconds, last 10 minutes"``."""
        return f"Entries per {self.per}, last {self.window_said}"


def throughput(now: datetime.datetime | None = None) -> Chart:
    """Count the entries per bucket of the shortest window that shows all recent activity."""
    now = now or timezone.now()
    first = (
        AuditEntry.objects.filter(occurred_at__gte=now - WINDOWS[-1][0], occurred_at__lte=now)
        .order_by("occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )
    for window, bucket in WINDOWS:  # the last one stays when none is short enough
        end = _EPOCH + ((now - _EPOCH) // bucket + 1) * bucket
        start = end - window
        if first is not None and first >= start:
            break
    trunc = TruncSecond if bucket < datetime.timedelta(minutes=1) else TruncMinute
    groups = (
        AuditEntry.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .annotate(at=trunc("occurred_at"))
        .order_by()
        .values_list("at")
        .annotate(n=Count("id"))
    )
    counts: Counter[int] = Counter()
    for at, n in groups:
        counts[(at - start) // bucket] += n
    return _layout(window, bucket, start, end, counts)


def _layout(
    window: datetime.timedelta,
    bucket: datetime.timedelta,
    start: datetime.datetime,
    end: datetime.datetime,
    counts: Counter[int],
) -> Chart:
    peak = max(counts.values(), default=0)
    step = _nice_step(peak / 4)
    top = step * max(1, math.ceil(peak / step))
    slots = window // bucket
    slot_width = (RIGHT - LEFT) / slots
    seconds = bucket < datetime.timedelta(minutes=1) or window <= datetime.timedelta(minutes=10)
    time_format = "%H:%M:%S" if seconds else "%H:%M"
    bars = []
    for index, n in sorted(counts.items()):
        height = (BOTTOM - TOP) * n / top
        begins = timezone.localtime(start + index * bucket)
        ends = begins + bucket
        entries = "entry" if n == 1 else "entries"
        label = f"{begins:{time_format}} to {ends:{time_format}}: {n} {entries}"
        bars.append(
            Bar(
                round(LEFT + index * slot_width, 2),
                round(BOTTOM - height, 2),
                round(max(slot_width * 0.8, 1), 2),
                round(height, 2),
                label,
            )
        )
    y_ticks = tuple(
        Tick(round(BOTTOM - (BOTTOM - TOP) * value / top, 2), str(value))
        for value in range(0, top + 1, step)
    )
    x_ticks = tuple(
        Tick(
            round(LEFT + (RIGHT - LEFT) * quarter / 4, 2),
            f"{timezone.localtime(start + window * quarter / 4):{time_format}}",
            "start" if quarter == 0 else "end" if quarter == 4 else "middle",
        )
        for quarter in range(5)
    )
    return Chart(
        window, bucket, start, end, tuple(bars), sum(counts.values()), peak, y_ticks, x_ticks
    )


def _nice_step(rough: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``rough``."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude >= rough:
                return factor * magnitude
        magnitude *= 10


def _say(span: datetime.timedelta) -> str:
    """``"10 seconds"``, ``"minute"``, ``"5 minutes"``, ``"hour"``, ``"24 hours"``."""
    seconds = int(span.total_seconds())
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return str(span)
