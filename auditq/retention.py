"""Retention: delete the audit entries older than a number of days, in small batches.

Each batch is its own short transaction: it takes the keys of the oldest ``batch_size``
entries through the ``occurred_at`` index, then deletes those rows by key. The table is
never locked for long, so workers keep recording while a prune runs. Run it from
``manage.py auditq_prune`` or as the periodic task ``auditq.tasks.prune``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from celery import shared_task
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from auditq.models import AuditEntry

logger = logging.getLogger("auditq")

DEFAULT_BATCH_SIZE = 1000


def cutoff(older_than_days: int, now: datetime.datetime | None = None) -> datetime.datetime:
    """The time before which entries go: ``older_than_days`` days before ``now``.

    Raises:
        ValueError: negative days; OverflowError: more days than the calendar holds.
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be 0 or more, not {older_than_days}")
    return (now or timezone.now()) - datetime.timedelta(days=older_than_days)


def count(before: datetime.datetime, using: str = DEFAULT_DB_ALIAS) -> int:
    """How many entries occurred before ``before`` (what a prune would delete)."""
    return AuditEntry.objects.using(using).filter(occurred_at__lt=before).count()


def prune(
    before: datetime.datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    using: str = DEFAULT_DB_ALIAS,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Delete the entries that occurred before ``before``; return how many were deleted.

    ``progress`` is called with the size of each deleted batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, not {batch_size}")
    entries = AuditEntry.objects.using(using)
    deleted = 0
    while True:
        with transaction.atomic(using=using):
            keys = list(
                entries.filter(occurred_at__lt=before)
                .order_by("occurred_at", "id")
                .values_list("id", flat=True)[:batch_size]
            )
            if not keys:
                break
            batch, _ = entries.filter(id__in=keys).delete()
        deleted += batch
        if progress is not None:
            progress(batch)
    logger.info("auditq: pruned %d audit entries that occurred before %s", deleted, before)
    return deleted


@shared_task(name="auditq.tasks.prune", ignore_result=True, store_errors_even_if_ignored=True)
def prune_task(
    older_than_days: int, batch_size: int = DEFAULT_BATCH_SIZE, using: str = DEFAULT_DB_ALIAS
) -> int:
    """Delete the entries older than ``older_than_days`` days (schedule it with beat)."""
    return prune(cutoff(older_than_days), batch_size, using)
