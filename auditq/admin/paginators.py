"""A paginator for admins of big tables: it never counts the whole table."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db import connections, models

from auditq.backends import backend


class CappedCountPaginator(Paginator):
    """Counts at most ``CAP`` rows; an unfiltered list on PostgreSQL uses the planner's estimate.

    Django counts the whole filtered queryset to paginate, and on millions of rows that
    ``COUNT(*)`` costs far more than the page. Past the cap the count is approximate,
    which only matters to someone paging beyond page ``CAP / list_per_page``.

    Example:
        >>> class OrderAdmin(admin.ModelAdmin):
        ...     paginator = CappedCountPaginator
        ...     show_full_result_count = False
    """

    CAP = 10_000
    approximate = ""
    """How the count is approximate, for display: ``""``, ``"about"`` or ``"more than"``."""

    @cached_property
    def count(self) -> int:
        queryset: Any = self.object_list
        if not queryset.query.where:
            estimate = estimated_rows(queryset)
            if estimate is not None and estimate > self.CAP:
                self.approximate = "about"
                return estimate
        # No ORDER BY: counting needs none, and without it PostgreSQL counts from an index.
        capped = queryset.order_by()[: self.CAP + 1].count()
        if capped > self.CAP:
            self.approximate = "more than"
            return self.CAP
        return capped


class SearchResultsPaginator(CappedCountPaginator):
    """A search's results: counted up to 1,000. Past that, "more than 1,000 results" says
    as much, and the count stops early (on a partitioned trail, often in the first
    partition it reads) instead of rechecking ten times as many matches."""

    CAP = 1_000


def estimated_rows(queryset: models.QuerySet) -> int | None:
    """The server's row estimate for the table (PostgreSQL's autovacuum keeps one), or
    None where there is none."""
    connection = connections[queryset.db]
    return backend(connection).estimate_rows(connection, queryset.model._meta.db_table)
