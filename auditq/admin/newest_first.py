"""Search results: in an order no index walks (a column sort too), and a page read from
the newest partition first on a partitioned trail."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.db import connections
from django.db.models import F, OrderBy, QuerySet
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from auditq import conf, partitions
from auditq.admin.date_hierarchy import YearsFromIndex


def by_time(descending: bool) -> OrderBy:
    """Ordered by the time, in an order no index gives (see :data:`SEARCH_ORDERING`)."""
    return OrderBy(Coalesce(F("occurred_at"), F("occurred_at")), descending=descending)


SEARCH_ORDERING = (by_time(descending=True), "-id")
"""A search's results, newest first, in an order no index gives. On the time index
PostgreSQL would walk the table newest first, expecting the many matches its estimate
of a ``LIKE '%...%'`` promises; a rare term then reads every row (seconds on millions).
Ordered by this expression it reads the matches from the trigram indexes and sorts them."""


def unindexed(ordering: Sequence[Any]) -> list[Any]:
    """``ordering`` (of search results) with the time column written as
    :data:`SEARCH_ORDERING` writes it: sorted by the time column, oldest or newest first,
    the results must not walk the time index either."""
    return [
        by_time(descending=item.startswith("-"))
        if isinstance(item, str) and item.lstrip("-") == "occurred_at"
        else item
        for item in ordering
    ]


class SearchChangeList(ChangeList):
    """The entries' changelist: a column sort of search results keeps off the time index."""

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list[Any]:
        ordering = super().get_ordering(request, queryset)
        return unindexed(ordering) if self.query.strip() else ordering


class NewestFirst(YearsFromIndex):
    """A page of search results (ordered by :data:`SEARCH_ORDERING`) that is read from the
    newest partition alone when that partition holds the whole page.

    PostgreSQL answers a search's page by reading the matches of every partition the
    query reaches (a pg_trgm bitmap scan per partition), then sorting them; it does not
    stop once the newest partition gave a page. When the list is ordered newest first and
    the newest partition holds at least the rows up to the page's end, those rows are the
    page: every other match is older. Otherwise the page is read as usual.
    """

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            since = self._newest_partition()
            if since is not None:
                query = self.query
                low, high = query.low_mark, query.high_mark
                narrowed: Any = self._chain()  # type: ignore[attr-defined]  # Django's own
                narrowed.__class__ = YearsFromIndex  # read as usual, not narrowed again
                narrowed.query.clear_limits()
                narrowed = narrowed.filter(occurred_at__gte=since)
                narrowed.query.set_limits(low, high)
                rows = list(narrowed)
                if high is not None and len(rows) == high - low:
                    self._result_cache = rows
        super()._fetch_all()

    def _newest_partition(self) -> datetime.datetime | None:
        """The start of the newest partition, if this page can be read from it alone."""
        query = self.query
        period = conf.get().PARTITION
        if period is None or query.high_mark is None:
            return None
        if tuple(query.order_by[:1]) != SEARCH_ORDERING[:1]:
            return None  # a column sort: the page may come from any partition
        if connections[self.db].vendor != "postgresql":
            return None
        return partitions.period_start(period, datetime.datetime.now(datetime.UTC))


def newest_first(queryset: Any) -> Any:
    """``queryset`` (a page of the list, not yet read) as a :class:`NewestFirst`."""
    if getattr(queryset, "_result_cache", True) is None:
        queryset.__class__ = NewestFirst
    return queryset
