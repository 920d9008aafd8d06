"""A date hierarchy for admins of big tables: its years, months and days come from the
index, not a scan."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db.models import Max, Min
from django.utils import timezone

from auditq.models import AuditEntryQuerySet

KINDS = ("year", "month", "day")
PROBES = 400
"""At most this many probes a list: a longer one (days over years, which the admin never
asks) is left to Django's scan."""


class YearsFromIndex(AuditEntryQuerySet):
    """The changelist's queryset: the date hierarchy's years, months and days without a
    scan of the table.

    Django lists them with ``SELECT DISTINCT date_trunc(...)``, which reads and sorts every
    row in range (a year of a big trail: most of it). Here the first and last dates come
    from the index, and each year, month or day in between is kept if one entry of it
    exists: one index probe each, but for the first and the last, which hold those dates
    (at most 10 months, or 29 days). The first and last dates are read once per page:
    Django's own ``MIN``/``MAX`` (which picks the level to show) is reused.
    """

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = super().aggregate(*args, **kwargs)
        first, last = kwargs.get("first"), kwargs.get("last")
        if (
            not args
            and len(kwargs) == 2
            and isinstance(first, Min)
            and isinstance(last, Max)
            and first.source_expressions == last.source_expressions
        ):
            # The date hierarchy's question: this queryset's first and last dates.
            self._auditq_bounds = (first.source_expressions, result)
        return result

    def datetimes(self, field_name: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        if kind not in KINDS or args or kwargs:
            return super().datetimes(field_name, kind, *args, **kwargs)  # type: ignore[arg-type]
        bounds = self._bounds(field_name)
        if bounds["first"] is None:
            return []
        zone = timezone.get_current_timezone() if settings.USE_TZ else None
        first, last = (
            timezone.localtime(bounds[key]) if zone else bounds[key] for key in ("first", "last")
        )
        periods = list(itertools.islice(_periods(first, last, kind, zone), PROBES + 1))
        if len(periods) > PROBES:
            return super().datetimes(field_name, kind)  # type: ignore[arg-type]
        found = []
        for start, end in periods:
            span = {f"{field_name}__gte": start, f"{field_name}__lt": end}
            # The first and last periods hold the first and last entries: no probe.
            if start is periods[0][0] or end is periods[-1][1] or self.filter(**span).exists():
                found.append(start)
        return found

    def _bounds(self, field_name: str) -> dict[str, Any]:
        """``{"first": ..., "last": ...}`` of ``field_name``: as Django's own ``MIN``/``MAX``
        on this queryset found them, or read now."""
        found = getattr(self, "_auditq_bounds", None)
        wanted = Min(field_name)
        if found is not None and found[0] == wanted.source_expressions:
            return found[1]
        return self.order_by().aggregate(first=wanted, last=Max(field_name))


def _periods(
    first: datetime.datetime, last: datetime.datetime, kind: str, zone: Any
) -> Iterator[tuple[datetime.datetime, datetime.datetime]]:
    """``(start, end)`` of each year, month or day from ``first``'s to ``last``'s."""
    if kind == "year":
        start = datetime.datetime(first.year, 1, 1, tzinfo=zone)
    elif kind == "month":
        start = datetime.datetime(first.year, first.month, 1, tzinfo=zone)
    else:
        start = datetime.datetime(first.year, first.month, first.day, tzinfo=zone)
    while start <= last:
        end = _next(start, kind, zone)
        yield start, end
        start = end


def _next(start: datetime.datetime, kind: str, zone: Any) -> datetime.datetime:
    if kind == "year":
        return datetime.datetime(start.year + 1, 1, 1, tzinfo=zone)
    if kind == "month":
        year, month = divmod(start.month, 12)
        return datetime.datetime(start.year + year, month + 1, 1, tzinfo=zone)
    day = start.date() + datetime.timedelta(days=1)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=zone)
