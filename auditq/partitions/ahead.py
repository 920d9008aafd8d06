"""Partitions made ahead: the default partition and those of the coming periods, by the
relay's sweeper (:func:`upkeep`), ``auditq_relay`` and ``auditq_partitions --create``.

A new partition is made as a table of its own and then attached, which locks the parent
only in SHARE UPDATE EXCLUSIVE mode: reads and writes of the trail go on.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any

from django.db import connections, transaction

from auditq import conf
from auditq.partitions.periods import (
    DEFAULT,
    TABLE,
    UTC,
    Partition,
    check_period,
    entries_database,
    is_partitioned,
    listing,
    next_start,
    partition_name,
    period_start,
)

logger = logging.getLogger("auditq")

AHEAD = 3
"""Periods made ahead of the current one."""
UPKEEP_SECONDS = 3600.0
"""At most one upkeep (its DDL) per process and database this often."""
RETRY_SECONDS = 60.0
"""After an upkeep that failed (a lock not had in time), the next try this much later."""
LOCK_TIMEOUT = "2s"
"""How long a DDL statement waits for its lock before it gives up (and is tried again):
a statement queued behind a long reader would stall every query behind it."""


def create(
    period: str,
    start: datetime.datetime,
    end: datetime.datetime,
    using: str | None = None,
) -> list[str]:
    """Make the default partition and the partitions of every ``period`` from the one
    holding ``start`` to the one holding ``end`` that are missing; return their names.

    Rows of those periods already in the default partition move into their own.

    Raises:
        ValueError: a bad period, or the table is not partitioned (``auditq_partition``).
        django.db.OperationalError: a lock not had within :data:`LOCK_TIMEOUT`.
    """
    check_period(period)
    alias = entries_database(using)
    if not is_partitioned(alias):
        raise ValueError(
            f"the audit entries' table in {alias!r} is not partitioned: run "
            "manage.py auditq_partition first"
        )
    return make(connections[alias], TABLE, period, start, end, listing(alias))


def make(
    connection: Any,
    parent: str,
    period: str,
    start: datetime.datetime,
    end: datetime.datetime,
    existing: list[Partition],
) -> list[str]:
    made = []
    quote = connection.ops.quote_name
    if not any(p.default for p in existing):
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(f"CREATE TABLE {quote(DEFAULT)} PARTITION OF {quote(parent)} DEFAULT")
        made.append(DEFAULT)
    taken = [(p.start, p.end) for p in existing if p.start is not None and p.end is not None]
    low = period_start(period, start)
    while low <= end:
        high = next_start(period, low)
        if not any(s < high and low < e for s, e in taken):
            name = partition_name(period, low)
            _attach(connection, parent, name, low, high)
            made.append(name)
        low = high
    if made:
        logger.info("auditq: made the audit partitions %s", ", ".join(made))
    return made


def _attach(
    connection: Any, parent: str, name: str, low: datetime.datetime, high: datetime.datetime
) -> None:
    """Make ``name`` as a table of its own, move into it what the default partition holds
    of its period, and attach it: the parent is locked only in SHARE UPDATE EXCLUSIVE
    mode (reads and writes go on); the default partition, scanned, is locked briefly."""
    quote = connection.ops.quote_name
    bounds = [low.isoformat(), high.isoformat()]
    within = "occurred_at >= %s AND occurred_at < %s"
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(
            f"CREATE TABLE {quote(name)} (LIKE {quote(parent)} INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS INCLUDING STORAGE)"
        )
        # Rows of this period recorded while it had no partition: moved, the default
        # partition locked against new ones meanwhile.
        cursor.execute(f"LOCK TABLE {quote(DEFAULT)} IN EXCLUSIVE MODE")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {quote(DEFAULT)} WHERE {within} RETURNING *) "
            f"INSERT INTO {quote(name)} SELECT * FROM moved",
            bounds,
        )
        cursor.execute(
            f"ALTER TABLE {quote(parent)} ATTACH PARTITION {quote(name)} "
            f"FOR VALUES FROM (%s) TO (%s)",
            bounds,
        )


def ensure(
    using: str | None = None,
    period: str | None = None,
    ahead: int = AHEAD,
    now: datetime.datetime | None = None,
) -> list[str]:
    """Make the partitions of the current period and ``ahead`` more (and the default
    partition) where missing; return the names made. ``period``: ``AUDITQ["PARTITION"]``.

    Raises:
        ValueError: no period (``AUDITQ["PARTITION"]`` is ``None``), ``ahead`` below 0,
            or the table is not partitioned.
    """
    period = period or conf.get().PARTITION
    if period is None:
        raise ValueError("AUDITQ['PARTITION'] is None: there is no period to partition by")
    if ahead < 0:
        raise ValueError(f"ahead must be 0 or more, not {ahead}")
    start = period_start(period, now or datetime.datetime.now(UTC))
    end = start
    for _ in range(ahead):
        end = next_start(period, end)
    return create(period, start, end, using)


_last: dict[str, float] = {}
_upkeep_lock = threading.Lock()


def upkeep(using: str, app: Any = None, connection: Any = None) -> int:
    """The relay's sweeper: with ``AUDITQ["PARTITION"]`` set, make the partitions ahead
    (:func:`ensure`) in the entries' database, at most once per :data:`UPKEEP_SECONDS`
    in this process (:data:`RETRY_SECONDS` after a failure). Returns 0 (it publishes
    nothing); never raises."""
    settings = conf.get()
    if settings.PARTITION is None:
        return 0
    alias = settings.DATABASE or using
    now = time.monotonic()
    with _upkeep_lock:
        if now < _last.get(alias, -float("inf")):
            return 0
        _last[alias] = now + UPKEEP_SECONDS
    try:
        if connections[alias].vendor != "postgresql":
            return 0
        if not is_partitioned(alias):
            logger.warning(
                "auditq: AUDITQ['PARTITION'] is %r but the audit entries' table in %r is "
                "not partitioned; run manage.py auditq_partition",
                settings.PARTITION,
                alias,
            )
            return 0
        ensure(alias, settings.PARTITION)
    except Exception:
        logger.warning("auditq: could not make the audit partitions ahead", exc_info=True)
        with _upkeep_lock:
            _last[alias] = now + RETRY_SECONDS
    return 0
