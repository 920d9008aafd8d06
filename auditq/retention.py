"""Retention: delete the audit entries, or the finished runs, older than a number of days,
in small batches (each its own short transaction, so workers keep recording), or, on a
partitioned trail, by dropping whole partitions. Pending
and running runs are never touched. Used by ``auditq_prune`` and the periodic tasks
``auditq.tasks.prune`` and ``auditq.tasks.prune_runs``. Without a database alias, each
table is pruned where the routers put it (the entries in ``AUDITQ["DATABASE"]``, if set).
An operation run's file (its ``values["file"]``, in the default storage: an admin export's)
is deleted with the run.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from celery import shared_task
from django.core.files.storage import default_storage
from django.db import models, router, transaction
from django.db.models import Q
from django.utils import timezone

from auditq import partitions
from auditq.chain.anchor import Pruned, anchor
from auditq.models import AuditEntry, CallbackRun, OperationRun

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


def count(before: datetime.datetime, using: str | None = None) -> int:
    """How many entries occurred before ``before`` (what a prune would delete)."""
    return _old_entries(before, using).count()


def count_runs(before: datetime.datetime, using: str | None = None) -> int:
    """How many runs finished before ``before`` (what :func:`prune_runs` would delete)."""
    return sum(runs.count() for runs in _old_runs(before, using))


def prune(
    before: datetime.datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    using: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Delete the entries that occurred before ``before``; return how many were deleted.

    A chained entry goes only with every entry recorded before it (see
    :func:`_old_entries`); each batch leaves its chains' anchors on the last entry it
    deleted. ``progress`` is called with the size of each deleted batch.

    A partitioned trail (PostgreSQL, ``AUDITQ["PARTITION"]``) first loses the partitions
    that lie wholly before ``before``, each detached and dropped in a moment
    (:func:`auditq.partitions.drop_before`); the rows left before ``before`` (in the
    partition that straddles it) are deleted in batches. Anchors then only move forward.
    """
    dropped = partitions.drop_before(before, using, progress)
    moved = partitions.forward_anchors if dropped else anchor
    deleted = dropped + _delete(_old_entries(before, using), "id", batch_size, progress, moved)
    logger.info("auditq: pruned %d audit entries that occurred before %s", deleted, before)
    return deleted


def prune_runs(
    before: datetime.datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    using: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Delete the callback and operation runs that finished before ``before`` (an
    operation's steps and file go with it); return how many runs were deleted."""
    callback_runs, operation_runs = _old_runs(before, using)
    files = _files_of(operation_runs)
    deleted = sum(
        _delete(runs, "finished_at", batch_size, progress)
        for runs in (callback_runs, operation_runs)
    )
    # A run that turned out not to be deleted (retried meanwhile) keeps its file.
    kept = set(
        OperationRun.objects.using(operation_runs.db)
        .filter(id__in=files)
        .values_list("id", flat=True)
    )
    for run_id, name in files.items():
        if run_id not in kept:
            _delete_file(name)
    logger.info("auditq: pruned %d runs that finished before %s", deleted, before)
    return deleted


def _files_of(runs: models.QuerySet) -> dict[int, str]:
    """The default storage's files that the operation ``runs`` name (``values["file"]``)."""
    return {
        run_id: values["file"]
        for run_id, values in runs.filter(values__has_key="file")
        .values_list("id", "values")
        .iterator()
        if isinstance(values, dict) and isinstance(values.get("file"), str) and values["file"]
    }


def _delete_file(name: str) -> None:
    try:
        default_storage.delete(name)
    except Exception as exc:  # a storage's outage leaves a file, never a run half pruned
        logger.warning("auditq: the file %s of a pruned run was not deleted: %s", name, exc)


def _old_entries(before: datetime.datetime, using: str | None) -> models.QuerySet:
    """The entries that occurred before ``before``, keeping each chain's pruned part its
    beginning: a chained entry recorded after the first recent one stays (a change that
    reached the trail late) until a later prune."""
    entries = AuditEntry.objects.using(using or router.db_for_write(AuditEntry))
    old = entries.filter(occurred_at__lt=before)
    recent = entries.filter(occurred_at__gte=before).order_by("id").values_list("id", flat=True)
    first_recent = recent.first()
    if first_recent is None:
        return old
    return old.filter(Q(chain_hash="") | Q(id__lt=first_recent))


def _old_runs(
    before: datetime.datetime, using: str | None
) -> tuple[models.QuerySet, models.QuerySet]:
    finished = {"finished_at__lt": before}
    return (
        CallbackRun.objects.using(using or router.db_for_write(CallbackRun))
        .exclude(status=CallbackRun.Status.PENDING)
        .filter(**finished),
        OperationRun.objects.using(using or router.db_for_write(OperationRun))
        .exclude(status__in=[OperationRun.Status.PENDING, OperationRun.Status.RUNNING])
        .filter(**finished),
    )


def _delete(
    rows: models.QuerySet,
    order: str,
    batch_size: int,
    progress: Callable[[int], object] | None,
    deleting: Callable[[list[Pruned], str], None] | None = None,
) -> int:
    """Delete ``rows`` oldest first, ``batch_size`` at a time, each batch its own
    transaction; count only the rows themselves (not what cascades with them).

    ``deleting``: called in each batch's transaction with its entries' ``(id,
    content_type_id, chain_hash, chain_lane)``, in key order (entries are deleted in key
    order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, not {batch_size}")
    deleted = 0
    while True:
        with transaction.atomic(using=rows.db):
            ordered = rows.order_by(order, "id")
            if deleting is None:
                keys = list(ordered.values_list("id", flat=True)[:batch_size])
            else:
                batch = list(
                    ordered.values_list("id", "content_type_id", "chain_hash", "chain_lane")[
                        :batch_size
                    ]
                )
                keys = [key for key, *_ in batch]
            if not keys:
                break
            _, by_model = rows.filter(id__in=keys).delete()  # still old and finished
            if deleting is not None:
                deleting(batch, rows.db)
        gone = by_model.get(rows.model._meta.label, 0)
        deleted += gone
        if progress is not None:
            progress(gone)
    return deleted


@shared_task(name="auditq.tasks.prune", ignore_result=True, store_errors_even_if_ignored=True)
def prune_task(
    older_than_days: int, batch_size: int = DEFAULT_BATCH_SIZE, using: str | None = None
) -> int:
    """Delete the entries older than ``older_than_days`` days (schedule it with beat)."""
    return prune(cutoff(older_than_days), batch_size, using)


@shared_task(name="auditq.tasks.prune_runs", ignore_result=True, store_errors_even_if_ignored=True)
def prune_runs_task(
    older_than_days: int, batch_size: int = DEFAULT_BATCH_SIZE, using: str | None = None
) -> int:
    """Delete the runs that finished more than ``older_than_days`` days ago (for beat)."""
    return prune_runs(cutoff(older_than_days), batch_size, using)
