"""An existing trail, with its rows, becomes partitioned: the new table is built beside
it, filled in batches while workers record, and swapped in under a short exclusive lock."""

from __future__ import annotations

import datetime
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction

from auditq.partitions.ahead import AHEAD, LOCK_TIMEOUT, make
from auditq.partitions.periods import (
    TABLE,
    UTC,
    check_period,
    entries_database,
    is_partitioned,
    next_start,
    period_start,
)

logger = logging.getLogger("auditq")

BUILDING = f"{TABLE}_partitioned"
"""The new table while :func:`convert` fills it."""
OLD = f"{TABLE}_unpartitioned"
"""The table :func:`convert` replaced, kept (``keep_old``) until dropped by hand."""
SEQUENCE = f"{TABLE}_part_id_seq"
"""The partitioned table's key sequence (PostgreSQL 15 has no identity column on a
partitioned table)."""

SWAP_ROWS = 1000
"""The conversion copies in rounds until at most this many rows are left for the swap,
which copies them under its exclusive lock: the fewer, the shorter the lock."""
MAX_ROUNDS = 50
"""…or until this many rounds: writers that outpace the copy still get their swap."""


@dataclass
class Conversion:
    """What :func:`convert` did."""

    rows: int = 0
    """Rows copied."""
    partitions: int = 0
    """Partitions made."""
    copy_seconds: float = 0.0
    """The batched copy: the trail stayed readable and writable."""
    pause_seconds: float = 0.0
    """The brief SHARE locks that find how far the copy may go (writes wait)."""
    swap_seconds: float = 0.0
    """The swap's ACCESS EXCLUSIVE lock, from granted to commit (reads and writes wait)."""


def convert(
    period: str,
    using: str | None = None,
    batch_size: int = 50_000,
    ahead: int = AHEAD,
    keep_old: bool = True,
    progress: Callable[[int], object] | None = None,
) -> Conversion:
    """Make the entries' table partitioned by ``period``, with its rows, without a long
    lock on it.

    1. Beside it, :data:`BUILDING`: the same columns; its primary key and unique
       constraints extended with ``occurred_at``; every other index and foreign key as
       they are; a partition per period from the oldest entry to ``ahead`` periods
       ahead, and the default partition.
    2. The rows are copied in key order, ``batch_size`` at a time, each batch its own
       transaction, in rounds until at most :data:`SWAP_ROWS` are left. How far a round
       may go is read under a brief SHARE lock, which waits for the transactions writing
       the table to finish: every key up to there is committed (or never will be).
       Workers keep recording meanwhile.
    3. The swap, in one transaction under an ACCESS EXCLUSIVE lock: the last rows are
       copied, the key sequence moved past them, the old table renamed :data:`OLD` (or
       dropped) and the new one given its name and its indexes' names.

    Prune nothing meanwhile: an entry pruned after it was copied stays in the new table
    until the next prune.

    Raises:
        ValueError: a bad period or batch size, not PostgreSQL, or already partitioned.
        django.db.OperationalError: a lock not had within :data:`LOCK_TIMEOUT` (the
            table is left as it was; run it again).
    """
    check_period(period)
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, not {batch_size}")
    alias = entries_database(using)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ValueError(f"only PostgreSQL partitions the audit entries, not {connection.vendor}")
    if is_partitioned(alias):
        raise ValueError(f"the audit entries' table in {alias!r} is already partitioned")
    done = Conversion()
    quote = connection.ops.quote_name
    shape = _shape(connection)
    columns = ", ".join(quote(name) for name in shape.columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(occurred_at) FROM {quote(TABLE)}")
        oldest = cursor.fetchone()[0] or datetime.datetime.now(UTC)
    _build(connection, shape)
    end = period_start(period, datetime.datetime.now(UTC))
    for _ in range(ahead):
        end = next_start(period, end)
    done.partitions = len(make(connection, BUILDING, period, oldest, end, []))

    started = time.monotonic()
    copied = rounds = 0
    while True:
        paused = time.monotonic()
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(f"LOCK TABLE {quote(TABLE)} IN SHARE MODE")
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {quote(TABLE)}")
            high = int(cursor.fetchone()[0])
        done.pause_seconds += time.monotonic() - paused
        rounds += 1
        if high - copied <= min(batch_size, SWAP_ROWS) or rounds > MAX_ROUNDS:
            break
        while copied < high:
            upto = min(copied + batch_size, high)
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {quote(BUILDING)} ({columns}) SELECT {columns} "
                    f"FROM {quote(TABLE)} WHERE id > %s AND id <= %s",
                    [copied, upto],
                )
                done.rows += cursor.rowcount
                if progress is not None:
                    progress(cursor.rowcount)
            copied = upto
    done.copy_seconds = time.monotonic() - started
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"LOCK TABLE {quote(TABLE)} IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        cursor.execute(
            f"INSERT INTO {quote(BUILDING)} ({columns}) SELECT {columns} "
            f"FROM {quote(TABLE)} WHERE id > %s",
            [copied],
        )
        done.rows += cursor.rowcount
        if progress is not None:
            progress(cursor.rowcount)
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        sequence = cursor.fetchone()[0]
        drawn = 0
        if sequence:  # the identity's: ids drawn and rolled back are not reused
            cursor.execute(f"SELECT CASE WHEN is_called THEN last_value END FROM {sequence}")
            drawn = cursor.fetchone()[0] or 0
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {quote(TABLE)}")
        cursor.execute(
            "SELECT setval(%s, greatest(%s, %s, 1))", [SEQUENCE, cursor.fetchone()[0], drawn]
        )
        if keep_old:
            _rename(cursor, quote, TABLE, OLD, shape, lambda name: _aside(name, "old"))
        else:
            cursor.execute(f"DROP TABLE {quote(TABLE)}")
        _rename(cursor, quote, BUILDING, TABLE, shape, lambda name: name, new=True)
        done.swap_seconds = time.monotonic() - locked
    logger.info(
        "auditq: partitioned the audit entries by %s: %d rows copied in %.1f s, writes "
        "paused %.3f s, the swap locked the table %.3f s",
        period,
        done.rows,
        done.copy_seconds,
        done.pause_seconds,
        done.swap_seconds,
    )
    return done


@dataclass
class _Shape:
    """The unpartitioned table's columns, keys, indexes and foreign keys."""

    columns: list[str]
    keys: list[tuple[str, str, list[str]]]
    """``(constraint, "PRIMARY KEY" or "UNIQUE", columns)``."""
    indexes: list[tuple[str, str]]
    """``(name, CREATE INDEX statement)`` of every other index."""
    foreign: list[tuple[str, str]]
    """``(name, definition)``."""


def _shape(connection: Any) -> _Shape:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [TABLE],
        )
        columns = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT conname, contype, conindid, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u', 'f')",
            [TABLE],
        )
        constraints = cursor.fetchall()
        keys, foreign, owned = [], [], set()
        for name, kind, index, definition in constraints:
            if kind == "f":
                foreign.append((name, definition))
                continue
            owned.add(index)
            inside = re.search(r"\((.*)\)", definition)
            names = [c.strip().strip('"') for c in (inside[1] if inside else "").split(",")]
            if "occurred_at" not in names:
                names.append("occurred_at")
            keys.append((name, "PRIMARY KEY" if kind == "p" else "UNIQUE", names))
        cursor.execute(
            "SELECT i.indexrelid, c.relname, pg_get_indexdef(i.indexrelid), i.indisunique "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(%s)",
            [TABLE],
        )
        indexes = []
        for oid, name, definition, unique in cursor.fetchall():
            if oid in owned:
                continue
            if unique:
                raise ValueError(
                    f"the unique index {name} is not a constraint auditq knows how to "
                    "extend with occurred_at; drop it first"
                )
            indexes.append((name, definition))
    return _Shape(columns, keys, indexes, foreign)


def _aside(name: str, tag: str) -> str:
    """An index or constraint name kept distinct from the live table's (63 bytes at most)."""
    return f"{name[: 62 - len(tag)]}_{tag}"


def _build(connection: Any, shape: _Shape) -> None:
    """Create :data:`BUILDING` (empty, no partition yet): dropped first if an interrupted
    conversion left it."""
    quote = connection.ops.quote_name
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {quote(BUILDING)}")
        cursor.execute(f"DROP SEQUENCE IF EXISTS {quote(SEQUENCE)}")
        cursor.execute(
            f"CREATE TABLE {quote(BUILDING)} (LIKE {quote(TABLE)} INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS) "
            "PARTITION BY RANGE (occurred_at)"
        )
        cursor.execute(f"CREATE SEQUENCE {quote(SEQUENCE)} AS bigint")
        cursor.execute(
            f"ALTER TABLE {quote(BUILDING)} ALTER COLUMN id SET DEFAULT "
            f"nextval('{SEQUENCE}'::regclass)"
        )
        cursor.execute(f"ALTER SEQUENCE {quote(SEQUENCE)} OWNED BY {quote(BUILDING)}.id")
        for name, kind, names in shape.keys:
            cursor.execute(
                f"ALTER TABLE {quote(BUILDING)} ADD CONSTRAINT {quote(_aside(name, 'new'))} "
                f"{kind} ({', '.join(quote(c) for c in names)})"
            )
        for name, definition in shape.indexes:
            statement = re.sub(
                r"^CREATE INDEX \S+ ON (ONLY )?\S+ ",
                f"CREATE INDEX {quote(_aside(name, 'new'))} ON {quote(BUILDING)} ",
                definition,
            )
            cursor.execute(statement)
        for name, definition in shape.foreign:
            cursor.execute(
                f"ALTER TABLE {quote(BUILDING)} ADD CONSTRAINT {quote(name)} {definition}"
            )


def _rename(
    cursor: Any,
    quote: Callable[[str], str],
    table: str,
    to: str,
    shape: _Shape,
    named: Callable[[str], str],
    new: bool = False,
) -> None:
    """Rename ``table`` to ``to`` and its keys and indexes from their names (or their
    ``_new`` names) to ``named(name)``."""
    cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(to)}")
    for name, _, _ in shape.keys:
        was = _aside(name, "new") if new else name
        if named(name) != was:
            cursor.execute(
                f"ALTER TABLE {quote(to)} RENAME CONSTRAINT {quote(was)} TO {quote(named(name))}"
            )
    for name, _ in shape.indexes:
        was = _aside(name, "new") if new else name
        if named(name) != was:
            cursor.execute(f"ALTER INDEX {quote(was)} RENAME TO {quote(named(name))}")
