"""Rows the workers have not taken -> broker messages: claims, publishing, sweeps."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    QuerySet,
    Value,
)
from django.utils import timezone

from auditq import conf, registry
from auditq.backends import backend
from auditq.delivery import broker
from auditq.models import Outbox

logger = logging.getLogger("auditq")


def publish_rows(
    due: QuerySet,
    *,
    task: str,
    label: str,
    queue_of: Callable[[str], str | None],
    using: str,
    app: Any = None,
    connection: Any = None,
) -> int:
    """Claim up to ``RELAY_BATCH_SIZE`` rows of ``due`` and send ``task(pk, using)`` for each.

    For the ledgers whose rows become tasks (callback runs, operation steps): a row is
    claimed (its ``published_at`` stamped, committed) before it is sent, released if the
    send fails, and published again if still due ``RELAY_AFTER_SECONDS`` after its claim
    (then after twice, four times... as long: :func:`_unpublished_or_lost`).
    With ``task_always_eager`` each row runs here instead (:func:`registry.runner`).

    Args:
        due: the rows whose work is due, with ``next_attempt_at`` and ``published_at``
            columns (those claimed less than ``RELAY_AFTER_SECONDS`` ago are left out).
        task: the task's name.
        label: the column handed to ``queue_of`` to pick each row's queue.
        queue_of: a label -> the row's Celery queue.
        using: the database alias of the rows.
        app: the Celery app; default the current app.
        connection: a broker connection to reuse.

    Returns:
        How many rows were published (or run here).

    Raises:
        broker.BrokerUnavailable: the broker failed; the rows not sent are due again at once.
    """
    due = due.filter(_unpublished_or_lost(timezone.now(), conf.get().RELAY_AFTER_SECONDS))
    if not due.exists():
        return 0  # no write transaction (on SQLite, no write lock) just to find nothing
    rows = due.model._default_manager.using(using)
    with transaction.atomic(using=using):
        claimed = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "id")
            .values_list("id", label)[: conf.get().RELAY_BATCH_SIZE]
        )
        rows.filter(id__in=[pk for pk, _ in claimed]).update(published_at=timezone.now())
    app = broker.celery_app(app)
    if broker.eager(app):  # tests and scripts: run them here and now
        for pk, _ in claimed:
            registry.runner(task)(pk, using)
        return len(claimed)
    sent = 0
    try:
        for pk, name in claimed:
            broker.send(task, (pk, using), app=app, connection=connection, queue=queue_of(name))
            sent += 1
    except BaseException:
        rows.filter(id__in=[pk for pk, _ in claimed[sent:]]).update(published_at=None)
        raise
    return sent


REPUBLISH_BACKOFF_CAP = 16
"""A row is published again at most this many ``RELAY_AFTER_SECONDS`` after its last publish."""


def _unpublished_or_lost(now: datetime.datetime, after: float) -> Q:
    """The rows never published, and those whose last publish looks lost: older than
    ``after`` seconds and than the time the row had already waited when it was published
    (``published_at - next_attempt_at``, up to ``REPUBLISH_BACKOFF_CAP`` times ``after``).

    The wait doubles with each publish of a row that stays due, so a row queued behind a
    long backlog is not sent again every ``after`` seconds (each copy lengthening the
    queue it waits in); a row whose message was lost is sent again after ``after``,
    ``2 * after``, ``4 * after``... seconds.
    """
    waited = ExpressionWrapper(F("published_at") - F("next_attempt_at"), DurationField())
    stale = now - datetime.timedelta(seconds=after)
    return Q(published_at__isnull=True) | (
        Q(published_at__lte=stale)
        & (
            Q(published_at__lte=now - datetime.timedelta(seconds=after * REPUBLISH_BACKOFF_CAP))
            | Q(published_at__lte=ExpressionWrapper(Value(now) - waited, DateTimeField()))
        )
    )


def sweep(using: str = DEFAULT_DB_ALIAS, app: Any = None, connection: Any = None) -> int:
    """Run every registered sweeper (retries and operation steps coming due); return how
    many rows they published."""
    app = broker.celery_app(app)
    return sum(sweeper(using, app, connection) for sweeper in registry.sweepers())


def _claim(using: str, limit: int, *, fresh: bool, cutoff: datetime.datetime) -> list[int]:
    """Mark up to ``limit`` rows as published now and return their keys (committed).

    ``fresh``: rows never published; otherwise rows older than ``cutoff`` whose last
    publish is older than ``cutoff`` too. Rows another relay is claiming are skipped.
    """

    rows = Outbox.objects.using(using)
    if fresh:
        due = rows.waiting().filter(relayed_at__isnull=True)
    else:
        due = (
            rows.waiting()
            .filter(created_at__lte=cutoff)
            .filter(Q(relayed_at__isnull=True) | Q(relayed_at__lte=cutoff))
        )
    connection = connections[using]
    found = backend(connection)
    if found.supports_locking_statements:  # one statement picks, locks and stamps
        return found.claim_outbox(connection, limit, fresh=fresh, cutoff=cutoff)
    if not due.exists():
        return []  # no write transaction (on SQLite, no write lock) just to find nothing
    with transaction.atomic(using=using):
        ids = list(
            due.select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            rows.filter(id__in=ids).update(relayed_at=timezone.now())
    return ids


def _release(using: str, outbox_ids: list[int]) -> None:
    """A publish failed: make the rows due again at once, not after a relay period."""

    Outbox.objects.using(using).filter(id__in=outbox_ids).update(relayed_at=None)


def _publish_claimed(using: str, ids: list[int], app: Any, connection: Any = None) -> None:
    try:
        broker.publish(ids, using, app, connection)
    except BaseException:
        _release(using, ids)  # whatever went wrong, the rows are due again at once
        raise


def relay(
    older_than: float | None = None,
    using: str = DEFAULT_DB_ALIAS,
    *,
    fresh: bool = False,
    app: Any = None,
    connection: Any = None,
) -> int:
    """Publish the rows that are due; return how many were published.

    Args:
        older_than: publish rows left undelivered this many seconds (default
            ``RELAY_AFTER_SECONDS``; 0 publishes every row not being published now).
        using: the database alias of the outbox.
        fresh: publish only the rows never published yet, whatever their age.
        app: the Celery app; default the current app.
        connection: a broker connection to reuse.

    Raises:
        broker.BrokerUnavailable: the broker could not be reached; the rows stay due.
    """
    settings = conf.get()
    cutoff = _cutoff(older_than)
    app = broker.celery_app(app)
    published = 0
    while ids := _claim(using, settings.RELAY_BATCH_SIZE, fresh=fresh, cutoff=cutoff):
        _publish_claimed(using, ids, app, connection)
        published += len(ids)
    return published


def _cutoff(older_than: float | None) -> datetime.datetime:
    age = conf.get().RELAY_AFTER_SECONDS if older_than is None else older_than
    return timezone.now() - datetime.timedelta(seconds=age)


def not_due(older_than: float | None = None, using: str = DEFAULT_DB_ALIAS) -> tuple[int, int]:
    """Count the undelivered rows :func:`relay` with ``older_than`` leaves alone, so that
    ``auditq_relay`` can say why: ``(young, recent)``, the rows written less than that
    long ago, and the older ones a relay published less than that long ago."""
    cutoff = _cutoff(older_than)
    rows = Outbox.objects.using(using).waiting()
    young = rows.filter(created_at__gt=cutoff).count()
    recent = rows.filter(created_at__lte=cutoff, relayed_at__gt=cutoff).count()
    return young, recent


def backlog(using: str = DEFAULT_DB_ALIAS) -> tuple[int, datetime.datetime | None]:
    """Return how many outbox rows wait for a worker and when the oldest was written
    (rows set aside wait for a person: ``Outbox.objects.set_aside()``)."""

    return Outbox.objects.using(using).waiting().count(), oldest(using)


def oldest(using: str = DEFAULT_DB_ALIAS) -> datetime.datetime | None:
    """When the oldest outbox row waiting for a worker was written (one index probe, no
    count)."""
    rows = Outbox.objects.using(using).waiting()
    return rows.order_by("id").values_list("created_at", flat=True).first()


def outbox_databases() -> list[str]:
    """The database aliases that hold an outbox (where auditq's tables are migrated)."""

    return [alias for alias in connections if router.allow_migrate_model(alias, Outbox)]
