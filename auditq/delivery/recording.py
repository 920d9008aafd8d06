"""Worker side: outbox rows -> their consumers, idempotently.

One delivery is one transaction: take the rows, hand each consumer the events it asked
for, delete the rows; everything commits together, so a second delivery finds nothing.
A row no worker of this version can record (malformed, an unknown model, a consumer that
fails on it) is set aside: kept with its error and skipped until retried from the admin,
so the rows behind it are recorded. Rows of another version are put back for a worker
that reads them. docs/recording.md has the details."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from auditq import registry
from auditq.backends import Taken, backend
from auditq.delivery import broker
from auditq.models import Outbox
from auditq.stream import events

logger = logging.getLogger("auditq")

TRANSIENT = (OperationalError, InterfaceError)
"""Database errors that say nothing about the rows (a lost connection, a deadlock, a lock
timeout): the delivery is rolled back and tried again, no row is set aside."""


class _ConsumerFailed(Exception):
    """A consumer raised while recording a batch: the batch is taken again, row by row."""


def record_rows(outbox_ids: Sequence[int], using: str = DEFAULT_DB_ALIAS) -> int:
    """Deliver the rows ``outbox_ids`` to their consumers and delete them; return how many
    events they held (0 when another delivery got there first).

    A row that cannot be recorded is set aside (see the module docstring) and logged.

    Raises:
        events.PayloadError: some rows are of another version, and were put back; the
            others were delivered.
    """
    return _record_batch(using, lambda: _take(using, outbox_ids))


def record_fresh(using: str = DEFAULT_DB_ALIAS, limit: int = 500) -> int:
    """Deliver up to ``limit`` rows that nobody has published, oldest first; return how
    many events they held.

    The workers' relay thread calls this: rows are taken straight from the outbox (rows
    other workers hold are skipped), with no broker message and no task in between, so a
    steady stream of small transactions costs one database transaction per round.

    Raises:
        events.PayloadError: some rows are of another version, and were put back; the
            others were delivered.
    """
    connection = connections[using]
    found = backend(connection)
    if found.supports_locking_statements:
        return _record_batch(using, lambda: found.take_fresh_outbox(connection, limit))
    # Elsewhere, look before taking: on SQLite a transaction takes the write lock.
    fresh = Outbox.objects.using(using).waiting().filter(relayed_at__isnull=True).order_by("id")
    ids = list(fresh.values_list("id", flat=True)[:limit])
    return record_rows(ids, using) if ids else 0


def _record_batch(using: str, take: Callable[[], list[Taken]]) -> int:
    try:
        return _record_once(using, take, one_by_one=False)
    except _ConsumerFailed:
        # Rolled back: take the rows again and record each in a savepoint of its own, so
        # that only the row a consumer fails on is set aside. (No savepoint otherwise:
        # two more round trips for every batch.)
        return _record_once(using, take, one_by_one=True)


def _record_once(using: str, take: Callable[[], list[Taken]], *, one_by_one: bool) -> int:
    consumers = registry.consumers()
    known = {consumer.name for consumer in consumers}
    unreadable: list[str] = []
    started = time.perf_counter()
    handed = dict.fromkeys((consumer.name for consumer in consumers), 0)
    with transaction.atomic(using=using):
        read: list[tuple[Taken, list[events.Event]]] = []
        kept: list[tuple[Taken, str]] = []
        aside: list[tuple[Taken, str]] = []
        rows = take()
        for row in rows:
            try:
                found = events.loads(row.payload, row.key)
                missing = {name for event in found for name in event.consumers} - known
                if missing:
                    raise events.OtherVersion(
                        f"its events want consumers this worker does not have: {sorted(missing)}"
                    )
            except events.OtherVersion as exc:
                unreadable.append(f"outbox row {row.pk}: {exc}")
                kept.append((row, str(exc)))
            except events.PayloadError as exc:
                aside.append((row, str(exc)))
            else:
                read.append((row, found))
        if one_by_one:
            recorded = 0
            for row, found in read:
                try:
                    with transaction.atomic(using=using):
                        counts = _to_consumers(consumers, found, using)
                except TRANSIENT:
                    raise
                except Exception as exc:
                    aside.append((row, _describe(exc)))
                else:
                    recorded += len(found)
                    for name, count in counts.items():
                        handed[name] += count
        else:
            everything = [event for _, found in read for event in found]
            try:
                handed.update(_to_consumers(consumers, everything, using))
            except TRANSIENT:
                raise
            except Exception as exc:
                raise _ConsumerFailed from exc
            recorded = len(everything)
        if kept:
            _put_back(using, kept, failed=False)
        if aside:
            _put_back(using, aside, failed=True)
    for row, error in aside:
        logger.error(
            "auditq: outbox row %s set aside (retry it from the admin once fixed): %s",
            row.pk,
            error,
        )
    done = len(rows) - len(kept) - len(aside)
    if done:
        _log_batch(done, recorded, handed, time.perf_counter() - started)
    if unreadable:
        raise events.PayloadError("; ".join(unreadable))
    return recorded


def _to_consumers(
    consumers: list[registry.Consumer], found: list[events.Event], using: str
) -> dict[str, int]:
    """Hand each consumer the events it asked for, in the open transaction; return how
    many each got."""
    handed = {}
    for consumer in consumers:
        wanted = events.wanted_by(found, consumer.name)
        if wanted:
            consumer.record(wanted, using)
            handed[consumer.name] = len(wanted)
    return handed


def _describe(exc: Exception) -> str:
    """What a set-aside row keeps of its consumer's error: the exception, and where."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f" ({frame.tb_frame.f_code.co_filename}:{frame.tb_lineno})" if frame else ""
    return f"a consumer failed: {type(exc).__name__}: {exc}{where}"


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


def _put_back(using: str, rows: list[tuple[Taken, str]], *, failed: bool) -> None:
    """Keep rows with their error, marked as published now.

    ``failed``: set aside, skipped by every worker until retried by hand. Otherwise (rows of
    another version) kept for a worker that reads them: the relay publishes them again
    after ``RELAY_AFTER_SECONDS``, and each failing delivery is reported
    (django-celery-results), rather than retried at every round.
    """
    now = timezone.now()
    Outbox.objects.using(using).bulk_create(
        Outbox(
            id=row.pk,
            created_at=now,
            relayed_at=now,
            payload=row.payload,
            key=row.key,
            error=error,
            failed_at=now if failed else None,
        )
        for row, error in rows
    )


def record_waiting(using: str = DEFAULT_DB_ALIAS) -> int:
    """Deliver every row in the outbox now, in this process (eager mode, tests)."""
    waiting = Outbox.objects.using(using).waiting().order_by("id")
    ids = list(waiting.values_list("id", flat=True))
    return record_rows(ids, using) if ids else 0


def committed(using: str) -> None:
    """Outbox rows were committed on ``using``: record them at once when tasks run eagerly.

    In production this does nothing (the relay in the workers wakes by itself); with
    ``task_always_eager`` (tests, scripts) the rows are recorded in this process.
    """
    if broker.eager(broker.celery_app()):
        record_waiting(using)
