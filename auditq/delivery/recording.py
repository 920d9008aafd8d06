"""Worker side: outbox rows -> their consumers, idempotently.

One delivery is one transaction: take the rows, hand each consumer the events it asked
for, delete the rows; everything commits together, so a second delivery finds nothing.
Rows that cannot be read are put back and reported. docs/recording.md has the details."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from auditq import registry
from auditq.backends import Taken, backend
from auditq.delivery import broker
from auditq.models import Outbox
from auditq.stream import events

logger = logging.getLogger("auditq")


def consume(outbox_ids: Sequence[int], using: str = DEFAULT_DB_ALIAS) -> int:
    """Deliver the rows ``outbox_ids`` to their consumers and delete them; return how many
    events they held (0 when another delivery got there first).

    Raises:
        events.PayloadError: some rows cannot be read; the others were delivered.
    """
    return _deliver(using, lambda: _take(using, outbox_ids))


def consume_fresh(using: str = DEFAULT_DB_ALIAS, limit: int = 500) -> int:
    """Deliver up to ``limit`` rows that nobody has published, oldest first; return how
    many events they held.

    The workers' relay thread calls this: rows are taken straight from the outbox (rows
    other workers hold are skipped), with no broker message and no task in between, so a
    steady stream of small transactions costs one database transaction per round.

    Raises:
        events.PayloadError: some rows cannot be read; the others were delivered.
    """
    connection = connections[using]
    found = backend(connection)
    if found.supports_locking_statements:
        return _deliver(using, lambda: found.take_fresh_outbox(connection, limit))
    # Elsewhere, look before taking: on SQLite a transaction takes the write lock.
    fresh = Outbox.objects.using(using).filter(relayed_at__isnull=True).order_by("id")
    ids = list(fresh.values_list("id", flat=True)[:limit])
    return consume(ids, using) if ids else 0


def _deliver(using: str, take: Callable[[], list[Taken]]) -> int:
    consumers = registry.consumers()
    known = {consumer.name for consumer in consumers}
    unreadable: list[str] = []
    started = time.perf_counter()
    handed = dict.fromkeys((consumer.name for consumer in consumers), 0)
    with transaction.atomic(using=using):
        found: list[events.Event] = []
        kept = []
        rows = take()
        for row in rows:
            try:
                read = events.loads(row.payload, row.key)
                missing = {name for event in read for name in event.consumers} - known
                if missing:
                    raise events.PayloadError(
                        f"its events want consumers this worker does not have: {sorted(missing)}"
                    )
            except events.PayloadError as exc:
                unreadable.append(f"outbox row {row.pk}: {exc}")
                kept.append(row)
                continue
            found.extend(read)
        for consumer in consumers:
            wanted = events.wanted_by(found, consumer.name)
            if wanted:
                consumer.record(wanted, using)
                handed[consumer.name] = len(wanted)
        if kept:
            _put_back(using, kept)
    if len(rows) > len(kept):
        _log_batch(len(rows) - len(kept), len(found), handed, time.perf_counter() - started)
    if unreadable:
        raise events.PayloadError("; ".join(unreadable))
    return len(found)


def _log_batch(rows: int, changes: int, handed: dict[str, int], seconds: float) -> None:
    """One INFO line per delivered batch, so that ``celery worker -l info`` shows what
    was recorded (each consumer's count is the changes handed to it)."""
    logger.info(
        "auditq: recorded %d outbox row%s in %.1f ms: %d change%s (%s)",
        rows,
        "" if rows == 1 else "s",
        seconds * 1000,
        changes,
        "" if changes == 1 else "s",
        ", ".join(f"{name} {count}" for name, count in handed.items()),
    )


def _take(using: str, outbox_ids: Sequence[int]) -> list[Taken]:
    """Delete the rows and return them, in key order. A row another transaction holds is
    waited for: if that worker commits the row is gone, if it dies the row is ours."""
    connection = connections[using]
    return backend(connection).take_outbox(connection, list(outbox_ids))


def _put_back(using: str, rows: list[Taken]) -> None:
    """Keep unreadable rows for a worker that can read them, marked as published now: the
    relay publishes them again after ``RELAY_AFTER_SECONDS``, and each failing delivery
    is reported (django-celery-results), rather than retried at every round."""
    now = timezone.now()
    Outbox.objects.using(using).bulk_create(
        Outbox(id=row.pk, created_at=now, relayed_at=now, payload=row.payload, key=row.key)
        for row in rows
    )


def consume_waiting(using: str = DEFAULT_DB_ALIAS) -> int:
    """Deliver every row in the outbox now, in this process (eager mode, tests)."""
    ids = list(Outbox.objects.using(using).order_by("id").values_list("id", flat=True))
    return consume(ids, using) if ids else 0


def committed(using: str) -> None:
    """Outbox rows were committed on ``using``: record them at once when tasks run eagerly.

    In production this does nothing (the relay in the workers wakes by itself); with
    ``task_always_eager`` (tests, scripts) the rows are recorded in this process.
    """
    if broker.eager(broker.celery_app()):
        consume_waiting(using)
