"""PostgreSQL: the audit entries' table range-partitioned by ``occurred_at``.

With ``AUDITQ["PARTITION"]`` (``"month"``, ``"week"`` or ``"day"``; periods in UTC, weeks
from Monday) ``auditq_auditentry`` is a partitioned table: one partition per period
(``auditq_auditentry_p2026_12``, ``…_p2026w49``, ``…_p2026_12_06``) and a default
partition (``auditq_auditentry_default``) that takes any change whose period has no
partition yet, so nothing is ever refused.

- Exactly once: a unique index of a partitioned table must hold its partition key, so
  the table is unique on ``(event_id, occurred_at)`` (and keyed on ``(id,
  occurred_at)``). An event's ``occurred_at`` is fixed when the change is captured and
  travels in its payload: every delivery of it lands in the same partition, where the
  index refuses the second one. The recording ``INSERT … ON CONFLICT DO NOTHING`` names
  no target, so it is served by whichever unique index the table has.
- Every index is declared on the parent, so PostgreSQL builds it on each partition,
  present and future (the pg_trgm search indexes too).
- Partitions are made ahead (the current period and :data:`AHEAD` more) by
  :func:`upkeep` — a relay sweeper, run at most once per :data:`UPKEEP_SECONDS` per
  process — by ``auditq_relay``, and by ``auditq_partitions --create``. A new partition
  is made as a table of its own and then attached, which locks the parent only in SHARE
  UPDATE EXCLUSIVE mode: reads and writes of the trail go on.
- :func:`drop_before`: ``auditq_prune`` detaches and drops the partitions that lie wholly
  before its cutoff.
- :func:`convert`: an existing table, with its rows, becomes partitioned: the new table
  is built beside it, filled in batches, and swapped in under a short exclusive lock.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections, router, transaction

from auditq import conf
from auditq.chain.anchor import Pruned
from auditq.models import AuditChainLane, AuditEntry

logger = logging.getLogger("auditq")

TABLE = AuditEntry._meta.db_table
"""The partitioned table."""
DEFAULT = f"{TABLE}_default"
"""The default partition: rows whose period has no partition of its own."""
BUILDING = f"{TABLE}_partitioned"
"""The new table while :func:`convert` fills it."""
OLD = f"{TABLE}_unpartitioned"
"""The table :func:`convert` replaced, kept (``keep_old``) until dropped by hand."""
SEQUENCE = f"{TABLE}_part_id_seq"
"""The partitioned table's key sequence (PostgreSQL 15 has no identity column on a
partitioned table)."""
AHEAD = 3
"""Periods made ahead of the current one."""
UPKEEP_SECONDS = 3600.0
"""At most one upkeep (its DDL) per process and database this often."""
RETRY_SECONDS = 60.0
"""After an upkeep that failed (a lock not had in time), the next try this much later."""
LOCK_TIMEOUT = "2s"
"""How long a DDL statement waits for its lock before it gives up (and is tried again):
a statement queued behind a long reader would stall every query behind it."""

SWAP_ROWS = 1000
"""The conversion copies in rounds until at most this many rows are left for the swap,
which copies them under its exclusive lock: the fewer, the shorter the lock."""
MAX_ROUNDS = 50
"""…or until this many rounds: writers that outpace the copy still get their swap."""

UTC = datetime.UTC


@dataclass(frozen=True)
class Partition:
    """One partition of the trail."""

    name: str
    start: datetime.datetime | None
    """First instant it holds; ``None`` for the default partition."""
    end: datetime.datetime | None
    """First instant past it; ``None`` for the default partition."""
    rows: int | None
    """The planner's estimate (``None``: never analysed)."""

    @property
    def default(self) -> bool:
        return self.start is None


def period_start(period: str, when: datetime.datetime) -> datetime.datetime:
    """The start (UTC) of the ``period`` that holds ``when``."""
    _check_period(period)
    when = when.astimezone(UTC)
    day = datetime.datetime(when.year, when.month, when.day, tzinfo=UTC)
    if period == "day":
        return day
    if period == "week":
        return day - datetime.timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: str, start: datetime.datetime) -> datetime.datetime:
    """The start of the period after the one starting at ``start``."""
    if period == "day":
        return start + datetime.timedelta(days=1)
    if period == "week":
        return start + datetime.timedelta(days=7)
    return (start + datetime.timedelta(days=32)).replace(day=1)


def partition_name(period: str, start: datetime.datetime) -> str:
    """``auditq_auditentry_p2026_12`` (month), ``…_p2026w49`` (ISO week), ``…_p2026_12_06``."""
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{TABLE}_p{year}w{week:02d}"
    if period == "day":
        return f"{TABLE}_p{start:%Y_%m_%d}"
    return f"{TABLE}_p{start:%Y_%m}"


def _check_period(period: str) -> None:
    if period not in conf.PERIODS:
        raise ValueError(f"period must be one of {', '.join(conf.PERIODS)}, not {period!r}")


def entries_database(using: str | None = None) -> str:
    """The alias that holds the entries: ``using``, or the routers' (``AUDITQ["DATABASE"]``)."""
    return using or router.db_for_write(AuditEntry)


def is_partitioned(using: str | None = None) -> bool:
    """Whether the entries' table is a partitioned table (PostgreSQL only)."""
    connection = connections[entries_database(using)]
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return bool(row) and row[0] == "p"


_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


def listing(using: str | None = None) -> list[Partition]:
    """The partitions, oldest first and the default last; empty when not partitioned."""
    if not is_partitioned(using):
        return []
    connection = connections[entries_database(using)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::bigint "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound, estimate in rows:
        match = _BOUND.search(bound or "")
        start, end = (_time(match[1]), _time(match[2])) if match else (None, None)
        found.append(Partition(name, start, end, int(estimate) if estimate >= 0 else None))
    far = datetime.datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.start is None, p.start or far))


def _time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:  # MINVALUE, MAXVALUE: not a partition auditq made
        return None


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
    _check_period(period)
    alias = entries_database(using)
    if not is_partitioned(alias):
        raise ValueError(
            f"the audit entries' table in {alias!r} is not partitioned: run "
            "manage.py auditq_partition first"
        )
    return _create(connections[alias], TABLE, period, start, end, listing(alias))


def _create(
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


# ---------------------------------------------------------------------------- pruning


def drop_before(
    before: datetime.datetime,
    using: str | None = None,
    progress: Callable[[int], object] | None = None,
    attempts: int = 5,
) -> int:
    """Detach and drop every partition that lies wholly before ``before``, oldest first;
    return how many entries went with them (0 when the table is not partitioned).

    A partition holding a chained entry recorded after the first entry that stays (a
    change that reached the trail late) is left to the row-by-row prune, which keeps
    each chain's pruned part its beginning. Each drop moves the chains' anchors forward
    to the partition's last chained entry, in the transaction that drops it. A drop
    that cannot have its lock within :data:`LOCK_TIMEOUT` is tried ``attempts`` times,
    then left to the row-by-row prune.
    """
    alias = entries_database(using)
    old = [p for p in listing(alias) if p.end is not None and p.end <= before]
    if not old:
        return 0
    connection = connections[alias]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id) FROM {quote(TABLE)} WHERE occurred_at >= %s", [before])
        first_recent = cursor.fetchone()[0]
    dropped = 0
    for partition in old:
        for attempt in range(attempts):
            try:
                gone = _drop(connection, partition.name, first_recent)
                break
            except DatabaseError as exc:
                if "lock timeout" not in str(exc) or attempt == attempts - 1:
                    logger.warning(
                        "auditq: could not drop the partition %s (%s); its rows are "
                        "deleted one batch at a time",
                        partition.name,
                        str(exc).strip().splitlines()[0],
                    )
                    gone = None
                    break
                time.sleep(0.2 * 2**attempt)
        if gone is None:
            continue
        dropped += gone
        if progress is not None:
            progress(gone)
    return dropped


def _drop(connection: Any, name: str, first_recent: int | None) -> int | None:
    """Detach and drop one partition, moving the anchors; ``None``: it must stay (a late
    chained entry)."""
    quote = connection.ops.quote_name
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if first_recent is not None:
            cursor.execute(
                f"SELECT 1 FROM {quote(name)} WHERE id >= %s AND chain_hash <> '' LIMIT 1",
                [first_recent],
            )
            if cursor.fetchone():
                return None
        lanes = AuditChainLane.objects.using(connection.alias).values_list(
            "content_type_id", "lane"
        )
        last: list[Pruned] = []
        for content_type, lane in lanes:
            cursor.execute(
                f"SELECT id, chain_hash FROM {quote(name)} WHERE content_type_id = %s "
                "AND chain_lane = %s AND chain_hash <> '' ORDER BY id DESC LIMIT 1",
                [content_type, lane],
            )
            row = cursor.fetchone()
            if row:
                last.append((row[0], content_type, row[1], lane))
        cursor.execute(f"SELECT count(*) FROM {quote(name)}")
        rows = int(cursor.fetchone()[0])
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"ALTER TABLE {quote(TABLE)} DETACH PARTITION {quote(name)}")
        cursor.execute(f"DROP TABLE {quote(name)}")
        forward_anchors(last, connection.alias)
    logger.info("auditq: dropped the audit partition %s (%d entries)", name, rows)
    return rows


def forward_anchors(pruned: list[Pruned], using: str) -> None:
    """Like :func:`auditq.chain.anchor.anchor` (the :data:`~auditq.chain.anchor.Pruned`
    rows just deleted), but an anchor only ever moves forward: partitions dropped and rows
    deleted are not pruned in one key order."""
    last: dict[tuple[int, int], tuple[int, str]] = {}
    for key, content_type, chain_hash, lane in pruned:
        if chain_hash and key > last.get((content_type, lane), (0, ""))[0]:
            last[content_type, lane] = (key, chain_hash)
    lanes = AuditChainLane.objects.using(using)
    for (content_type, lane), (key, chain_hash) in last.items():
        lanes.filter(content_type_id=content_type, lane=lane).exclude(
            anchor_entry_id__gte=key
        ).update(anchor_entry_id=key, anchor_hash=chain_hash)


# -------------------------------------------------------------------------- conversion


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
    _check_period(period)
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
    done.partitions = len(_create(connection, BUILDING, period, oldest, end, []))

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
