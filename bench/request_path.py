#!/usr/bin/env python
"""What ``@audited`` costs on the request path: plain vs audited create, update, delete.

Usage::

    .venv/bin/python bench/request_path.py [--ops N] [--db postgres|sqlite|both]
                                           [--broker redis|memory] [--json FILE]

Two models with the same eight fields, ``PlainRow`` and ``AuditedRow`` (``@audited``), are
written side by side in one process, alternating in chunks of 100 ops (ABBA order) so that
machine noise hits both sides equally. Each cell is timed (a) one op per transaction
(autocommit, a bare ``obj.save()`` in a view) and (b) 100 ops in one ``transaction.atomic()``
(the time of the whole block, commit and after-commit publish included, divided by 100).
The figure is the median per-op time in microseconds.

The audited side is the real request path: capture, the outbox row written at commit, and
the Celery message published after commit to a real broker (Redis by default; nothing
consumes it). Every cell is checked afterwards: one outbox row per transaction holding one
event per op, and one message per transaction in the queue, or the run fails loudly.

Environment: ``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``; a
throwaway database is created next to it and dropped at the end) and ``REDIS_URL`` (default
``redis://127.0.0.1:6379/15``; the ``auditq-bench`` queue is purged and deleted at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import decimal
import gc
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchdb import postgres_settings, postgres_url, server_execute

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

QUEUE = "auditq-bench"
BATCH = 100  # ops per transaction in the "100/txn" mode
CHUNK = 100  # ops per interleaving chunk in the "1/txn" mode
TARGETS = {"1/txn": 1.15, "100/txn": 1.10}  # DESIGN.md, "Performance targets"
OPS = ("create", "update", "delete")
MODES = ("1/txn", "100/txn")
DB_NAMES = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
BASE_TIME = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


class BenchError(Exception):
    """The run is not measuring what it claims to (missing outbox rows or messages)."""


# --------------------------------------------------------------------------- set-up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Request-path cost of @audited vs an unaudited model (see bench/README.md)."
    )
    parser.add_argument(
        "--ops",
        type=int,
        default=2000,
        help="ops per cell, a multiple of 100 (default 2000; DESIGN.md's reference is 10000)",
    )
    parser.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument(
        "--broker",
        choices=("redis", "memory"),
        default="redis",
        help="redis: REDIS_URL (default redis://127.0.0.1:6379/15); memory: in-process",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    if args.ops < BATCH or args.ops % BATCH:
        parser.error(f"--ops must be a positive multiple of {BATCH}")
    return args


def configure(databases: dict[str, dict[str, Any]], broker_url: str) -> Any:
    """Configure Django and a Celery app that publishes for real; return the Celery app."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="auditq-bench",
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_celery_results",
            "auditq",
            "benchapp",
        ],
        DATABASES=databases,
        AUDITQ={"QUEUE": QUEUE},
        CELERY_BROKER_URL=broker_url,
        CELERY_TASK_SERIALIZER="json",
        CELERY_RESULT_SERIALIZER="json",
        CELERY_ACCEPT_CONTENT=["json"],
        CELERY_RESULT_BACKEND="django-db",
        CELERY_TASK_ALWAYS_EAGER=False,
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {"auditq": {"handlers": ["console"], "level": "WARNING"}},
        },
    )
    django.setup()

    from celery import Celery

    app = Celery("auditq_bench")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.set_default()
    app.set_current()
    import auditq.tasks  # noqa: F401  (registers auditq.tasks.deliver on this app)

    if app.conf.task_always_eager:
        raise BenchError("task_always_eager is on: nothing would be published")
    return app


@contextlib.contextmanager
def broker_queue(app: Any) -> Iterator[Callable[[], int]]:
    """Declare the bench queue (as a worker would); yield ``drain()``; delete it at the end.

    ``drain()`` purges the queue and returns how many messages it held.
    """
    from kombu import Exchange, Queue

    conn = app.connection_for_write()
    channel = conn.default_channel
    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)
    queue(channel).declare()

    def drain() -> int:
        return channel.queue_purge(QUEUE) or 0

    try:
        drain()
        yield drain
    finally:
        try:
            drain()
            channel.queue_delete(QUEUE)
            channel.exchange_delete(QUEUE)
        finally:
            conn.release()


# --------------------------------------------------------------------------- timing


def time_each(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[float]:
    """Per-op microseconds, each op on its own (autocommit: its own transaction)."""
    clock = time.perf_counter_ns
    out = []
    for item in items:
        start = clock()
        fn(item)
        out.append((clock() - start) / 1000)
    return out


def time_batch(fn: Callable[[Any], Any], items: Sequence[Any], alias: str) -> list[float]:
    """Per-op microseconds of one ``atomic()`` block over ``items`` (commit included)."""
    from django.db import transaction

    clock = time.perf_counter_ns
    start = clock()
    with transaction.atomic(using=alias):
        for item in items:
            fn(item)
    return [(clock() - start) / 1000 / len(items)]


@dataclass
class Variant:
    name: str
    fn: Callable[[Any], Any]
    items: Sequence[Any]
    around: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    samples: list[float] = field(default_factory=list)


def interleave(variants: list[Variant], mode: str, alias: str) -> None:
    """Run the variants chunk by chunk, rotating the order (ABBA for two) every chunk.

    After each chunk, untimed, auditq's publisher thread is let finish: its publishes
    must not land in the next chunk's timing (which may be the plain side's). What the
    timings show is the request's own cost; the thread's cost per message is in the
    breakdown ("delivery.publish([id]) alone"), shared by the rows it batches.
    """
    from auditq import delivery

    size = len(variants[0].items)
    step = BATCH if mode == "100/txn" else CHUNK
    for k, start in enumerate(range(0, size, step)):
        order = variants if k % 2 == 0 else variants[::-1]
        for variant in order:
            part = variant.items[start : start + step]
            with variant.around():
                if mode == "100/txn":
                    variant.samples.extend(time_batch(variant.fn, part, alias))
                else:
                    variant.samples.extend(time_each(variant.fn, part))
            delivery.flush(timeout=60)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --------------------------------------------------------------------------- operations


def row_values(i: int, owner_ids: Sequence[int]) -> dict[str, Any]:
    return {
        "title": f"row {i}",
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3,
        "count": i,
        "amount": decimal.Decimal(i % 100000) / 100,
        "active": i % 2 == 0,
        "happened_at": BASE_TIME + datetime.timedelta(seconds=i),
        "owner_id": owner_ids[i % len(owner_ids)],
        "data": {"i": i, "tags": ["a", "b"], "ok": True},
    }


def creator(model: type, alias: str) -> Callable[[dict[str, Any]], None]:
    def create(values: dict[str, Any]) -> None:
        model(**values).save(using=alias)

    return create


def update(obj: Any) -> None:
    obj.count += 1
    obj.title = f"{obj.title} (edited)"
    obj.save()


def delete(obj: Any) -> None:
    obj.delete()


@dataclass
class Side:
    """One model on one database: the rows it will create, update and delete."""

    model: type
    alias: str
    next_i: int = 0

    def values(self, n: int, owner_ids: Sequence[int]) -> list[dict[str, Any]]:
        start, self.next_i = self.next_i, self.next_i + n
        return [row_values(i, owner_ids) for i in range(start, start + n)]

    def load(self, pks: Sequence[int]) -> list[Any]:
        return list(self.model.objects.using(self.alias).filter(pk__in=pks).order_by("pk"))


# --------------------------------------------------------------------------- verification


class Ledger:
    """What the audited side must have produced since the last check, checked and cleared."""

    def __init__(self, alias: str, drain: Callable[[], int]) -> None:
        self.alias = alias
        self.drain = drain
        self.transactions = 0
        self.events = 0
        self.unpublished = 0  # transactions whose publish was stubbed out on purpose
        self.extra_messages = 0  # messages published outside a transaction
        self.checked_transactions = 0

    def expect(self, ops: int, mode: str, published: bool = True) -> None:
        txns = ops if mode == "1/txn" else ops // BATCH
        self.transactions += txns
        self.events += ops
        if not published:
            self.unpublished += txns

    def check(self, what: str) -> None:
        from auditq import delivery
        from auditq.models import Outbox

        rows = Outbox.objects.using(self.alias)
        payloads = [json.loads(p) for p in rows.values_list("payload", flat=True)]
        events = sum(len(p.get("events", ())) for p in payloads)
        if not delivery.flush(timeout=60):
            raise BenchError(f"{what} on {self.alias}: the publisher did not finish")
        messages = self.drain()
        # The publisher sends rows that wait together as one message: between one message
        # and one per transaction.
        most = self.transactions - self.unpublished + self.extra_messages
        least = min(most, 1 + self.extra_messages)
        problems = []
        if len(payloads) != self.transactions:
            problems.append(f"{len(payloads)} outbox rows, expected {self.transactions}")
        if events != self.events:
            problems.append(f"{events} events in the outbox, expected {self.events}")
        if not least <= messages <= most:
            problems.append(f"{messages} messages in {QUEUE!r}, expected {least} to {most}")
        if problems:
            raise BenchError(f"{what} on {self.alias}: " + "; ".join(problems))
        rows.all().delete()
        self.checked_transactions += self.transactions
        self.transactions = self.events = self.unpublished = self.extra_messages = 0


# --------------------------------------------------------------------------- SQL counting


@dataclass
class Count:
    statements: list[str] = field(default_factory=list)  # seen by execute_wrapper
    commits: int = 0
    publishes: int = 0
    wire: list[str] | None = None  # PostgreSQL: queries on the wire (libpq trace)

    def sequence(self, vendor: str) -> list[str]:
        """Every round trip to the database, in order, plus the publishes.

        On PostgreSQL this is read from libpq's protocol trace. Without a trace it is
        rebuilt: psycopg sends BEGIN itself before a transaction's first statement (no
        execute_wrapper sees it), SQLite's BEGIN goes through the cursor, and COMMIT is
        a driver call on both.
        """
        if self.wire is not None:
            sequence = [label(sql) for sql in self.wire]
        else:
            sequence = [label(sql) for sql in self.statements]
            if self.commits and vendor == "postgresql":
                sequence.insert(0, "BEGIN")
            sequence += ["COMMIT"] * self.commits
        return sequence + ["publish"] * self.publishes

    def round_trips(self, vendor: str) -> int:
        return len(self.sequence(vendor)) - self.publishes


@contextlib.contextmanager
def counting(alias: str) -> Iterator[Count]:
    """Record what reaches the database and the broker through ``alias`` in the block."""
    from django.db import connections

    from auditq import delivery

    connection = connections[alias]
    count = Count()

    def wrapper(execute, sql, params, many, context):
        count.statements.append(sql)
        return execute(sql, params, many, context)

    original_commit = connection._commit
    original_publish = delivery.publish

    def _commit() -> Any:
        count.commits += 1
        return original_commit()

    def publish(*args: Any, **kwargs: Any) -> None:
        count.publishes += 1
        return original_publish(*args, **kwargs)

    # _commit, not commit: auditq installs its outbox hook as the instance's ``commit``.
    connection._commit = _commit
    delivery.publish = publish
    trace = pgconn = None
    if connection.vendor == "postgresql" and sys.platform == "linux":
        connection.ensure_connection()
        pgconn = connection.connection.pgconn
        trace = tempfile.TemporaryFile("w+")  # noqa: SIM115  (closed in the finally below)
        pgconn.trace(trace.fileno())
    try:
        with connection.execute_wrapper(wrapper):
            yield count
        delivery.flush(timeout=60)  # publishes happen on auditq's publisher thread
    finally:
        del connection._commit
        delivery.publish = original_publish
        if trace is not None and pgconn is not None:
            pgconn.untrace()  # flushes libpq's stream
            trace.seek(0)
            count.wire = wire_queries(trace.read())
            trace.close()


def wire_queries(trace: str) -> list[str]:
    """The queries the client sent, one per round trip, from a libpq protocol trace."""
    queries = []
    parse = ""
    for line in trace.splitlines():
        parts = line.split("\t", 4)
        if len(parts) < 4 or parts[1] != "F":
            continue
        kind, text = parts[3], parts[4].strip() if len(parts) > 4 else ""
        if kind == "Query":
            queries.append(text.strip('"'))
        elif kind == "Parse":  # extended protocol: Parse "name" "sql" ... Sync
            parse = text.split('"', 3)[-1] if text.count('"') >= 3 else text
        elif kind == "Sync":
            queries.append(parse.strip('"'))
    return queries


TABLE = re.compile(r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)


def label(sql: str) -> str:
    words = sql.split(None, 1)
    verb = words[0].upper() if words else "?"
    match = TABLE.match(sql)
    if match and match.group(1).startswith("auditq_"):
        return f"{verb} {match.group(1)}"
    return verb


def compress(sequence: Sequence[str]) -> str:
    """``["INSERT", "INSERT", "COMMIT"]`` -> ``"INSERT x2, COMMIT"``."""
    parts: list[list[Any]] = []
    for item in sequence:
        if parts and parts[-1][0] == item:
            parts[-1][1] += 1
        else:
            parts.append([item, 1])
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in parts)


# --------------------------------------------------------------------------- one database


@dataclass
class DbResult:
    name: str
    version: str
    cells: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    load: dict[str, list[float]] = field(default_factory=dict)
    statements: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    breakdown: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    checked_transactions: int = 0
    notes: list[str] = field(default_factory=list)


def run_database(
    key: str, alias: str, ops: int, drain: Callable[[], int], broker_url: str
) -> DbResult:
    from benchapp.models import AuditedRow, Owner, PlainRow
    from django.core.management import call_command
    from django.db import connections

    print(f"\n== {DB_NAMES[key]}: creating tables", flush=True)
    call_command("migrate", database=alias, run_syncdb=True, verbosity=0, interactive=False)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()" if key == "postgres" else "SELECT sqlite_version()")
        version = cursor.fetchone()[0]
    version = version.split(" on ")[0] if key == "postgres" else f"SQLite {version}"
    result = DbResult(DB_NAMES[key], version)
    owners = [Owner.objects.using(alias).create(name=f"owner {i}").pk for i in range(10)]
    ledger = Ledger(alias, drain)
    plain, audited = Side(PlainRow, alias), Side(AuditedRow, alias)

    # Warm-up: connections (database and broker), caches, code paths.
    measure_cells(plain, audited, owners, 2 * BATCH, ledger, record=None)

    print(f"== {DB_NAMES[key]}: timing {ops} ops per cell", flush=True)
    gc.collect()
    measure_cells(plain, audited, owners, ops, ledger, record=result)
    print(f"== {DB_NAMES[key]}: counting statements", flush=True)
    count_statements(plain, audited, owners, ledger, result, connection.vendor)
    print(f"== {DB_NAMES[key]}: breakdown of the audited create", flush=True)
    breakdown(plain, audited, owners, min(ops, 2000), ledger, result, broker_url)
    if key == "postgres":
        what_if_one_statement(plain, owners, min(ops, 2000), ledger, result)
    result.checked_transactions = ledger.checked_transactions
    return result


def measure_cells(
    plain: Side,
    audited: Side,
    owners: Sequence[int],
    ops: int,
    ledger: Ledger,
    record: DbResult | None,
) -> None:
    alias = plain.alias
    pks: dict[str, dict[str, list[int]]] = {}

    for mode in MODES:
        variants = [
            Variant("plain", creator(plain.model, alias), plain.values(ops, owners)),
            Variant("audited", creator(audited.model, alias), audited.values(ops, owners)),
        ]
        before = {s.model: max_pk(s) for s in (plain, audited)}
        interleave(variants, mode, alias)
        ledger.expect(ops, mode)
        ledger.check(f"create {mode}")
        pks[mode] = {
            "plain": new_pks(plain, before[plain.model]),
            "audited": new_pks(audited, before[audited.model]),
        }
        for side in ("plain", "audited"):
            if len(pks[mode][side]) != ops:
                raise BenchError(f"create {mode}: {side} made {len(pks[mode][side])} rows")
        if record is not None:
            record.cells[("create", mode)] = {v.name: v.samples for v in variants}

    for op, fn in (("update", update), ("delete", delete)):
        for mode in MODES:
            loaded, load_samples = load_interleaved(
                (plain, audited), (pks[mode]["plain"], pks[mode]["audited"])
            )
            if record is not None and op == "update" and mode == "1/txn":
                record.load = load_samples
            variants = [
                Variant("plain", fn, loaded["plain"]),
                Variant("audited", fn, loaded["audited"]),
            ]
            interleave(variants, mode, alias)
            ledger.expect(ops, mode)
            ledger.check(f"{op} {mode}")
            if op == "delete":
                for side in (plain, audited):
                    left = side.model.objects.using(alias).filter(pk__in=pks[mode][side_name(side)])
                    if left.exists():
                        raise BenchError(f"delete {mode}: {side.model.__name__} rows left")
            if record is not None:
                record.cells[(op, mode)] = {v.name: v.samples for v in variants}


def load_interleaved(
    sides: Sequence[Side], pks: Sequence[Sequence[int]]
) -> tuple[dict[str, list[Any]], dict[str, list[float]]]:
    """Load every row, 100 per SELECT, alternating sides; return rows and per-row times."""
    loaded: dict[str, list[Any]] = {side_name(s): [] for s in sides}
    samples: dict[str, list[float]] = {side_name(s): [] for s in sides}
    chunks = [chunked(p) for p in pks]
    clock = time.perf_counter_ns
    for k in range(len(chunks[0])):
        order = range(len(sides)) if k % 2 == 0 else reversed(range(len(sides)))
        for j in order:
            name = side_name(sides[j])
            start = clock()
            rows = sides[j].load(chunks[j][k])
            samples[name].append((clock() - start) / 1000 / len(rows))
            loaded[name].extend(rows)
    return loaded, samples


def side_name(side: Side) -> str:
    return "audited" if side.model.__name__ == "AuditedRow" else "plain"


def max_pk(side: Side) -> int:
    last = side.model.objects.using(side.alias).order_by("-pk").values_list("pk", flat=True)
    return last.first() or 0


def new_pks(side: Side, after: int) -> list[int]:
    rows = side.model.objects.using(side.alias).filter(pk__gt=after).order_by("pk")
    return list(rows.values_list("pk", flat=True))


def chunked(pks: Sequence[int], size: int = BATCH) -> list[list[int]]:
    return [list(pks[i : i + size]) for i in range(0, len(pks), size)]


def count_statements(
    plain: Side,
    audited: Side,
    owners: Sequence[int],
    ledger: Ledger,
    result: DbResult,
    vendor: str,
) -> None:
    """Run a few ops of every cell with the statements counted (outside the timed runs)."""
    alias = plain.alias
    singles = 10
    for side in (plain, audited):
        name = side_name(side)
        before = max_pk(side)
        create = creator(side.model, alias)
        per_op: dict[tuple[str, str], list[Count]] = {}
        values = side.values(singles + BATCH, owners)
        per_op[("create", "1/txn")] = [_counted(alias, create, v) for v in values[:singles]]
        per_op[("create", "100/txn")] = [_counted_batch(alias, create, values[singles:])]
        pks = new_pks(side, before)
        for op, fn in (("update", update), ("delete", delete)):
            rows = side.load(pks)
            per_op[(op, "1/txn")] = [_counted(alias, fn, r) for r in rows[:singles]]
            per_op[(op, "100/txn")] = [_counted_batch(alias, fn, rows[singles:])]
        for (op, mode), counts in per_op.items():
            n = singles if mode == "1/txn" else BATCH
            trips = sum(c.round_trips(vendor) for c in counts)
            rebuilt = sum(
                Count(c.statements, c.commits, c.publishes).round_trips(vendor) for c in counts
            )
            if trips != rebuilt:
                result.notes.append(
                    f"{name} {op} {mode}: {trips} round trips on the wire, {rebuilt} "
                    "rebuilt from execute_wrapper"
                )
            result.statements.setdefault((op, mode), {})[name] = {
                "round_trips_per_op": trips / n,
                "statements_per_op": sum(len(c.statements) for c in counts) / n,
                "publishes_per_op": sum(c.publishes for c in counts) / n,
                "sequence": compress(counts[0].sequence(vendor)),
                "source": "libpq trace" if counts[0].wire is not None else "execute_wrapper",
            }
        if name == "audited":
            for _op in OPS:
                ledger.expect(singles, "1/txn")
                ledger.expect(BATCH, "100/txn")
    ledger.check("statement counting")


def _counted(alias: str, fn: Callable[[Any], Any], item: Any) -> Count:
    with counting(alias) as count:
        fn(item)
    return count


def _counted_batch(alias: str, fn: Callable[[Any], Any], items: Sequence[Any]) -> Count:
    from django.db import transaction

    with counting(alias) as count, transaction.atomic(using=alias):
        for item in items:
            fn(item)
    return count


# --------------------------------------------------------------------------- breakdown


@contextlib.contextmanager
def publish_stubbed() -> Iterator[None]:
    """Replace the after-commit publish by nothing (the outbox row is still written)."""
    from auditq import delivery

    original = delivery.publish
    delivery.publish = lambda outbox_ids, using="default", app=None: None
    try:
        yield
        delivery.flush(timeout=60)  # let the publisher thread hand its rows to the stub
    finally:
        delivery.publish = original


@contextlib.contextmanager
def rolled_back(alias: str) -> Iterator[None]:
    """A transaction that is rolled back: auditq drops the events captured inside."""
    from django.db import transaction

    with transaction.atomic(using=alias):
        yield
        transaction.set_rollback(True, using=alias)


def breakdown(
    plain: Side,
    audited: Side,
    owners: Sequence[int],
    n: int,
    ledger: Ledger,
    result: DbResult,
    broker_url: str,
) -> None:
    """Where the audited create's extra time goes, piece by piece (each group interleaved)."""
    from django.db import connections, transaction
    from django.db.models.signals import post_save

    from auditq import delivery
    from auditq.models import Outbox

    alias = plain.alias
    create_plain = creator(plain.model, alias)
    create_audited = creator(audited.model, alias)

    def plain_in_atomic(values: dict[str, Any]) -> None:
        with transaction.atomic(using=alias):
            create_plain(values)

    for mode in MODES:
        variants = [Variant("plain", create_plain, plain.values(n, owners))]
        if mode == "1/txn":
            variants.append(Variant("plain in atomic()", plain_in_atomic, plain.values(n, owners)))
        variants += [
            Variant(
                "audited, publish stubbed",
                create_audited,
                audited.values(n, owners),
                around=publish_stubbed,
            ),
            Variant("audited", create_audited, audited.values(n, owners)),
        ]
        interleave(variants, mode, alias)
        ledger.expect(n, mode, published=False)
        ledger.expect(n, mode)
        ledger.check(f"breakdown create {mode}")
        result.breakdown[f"create {mode}"] = {v.name: v.samples for v in variants}

    # In memory: the instance's snapshot at construction, the post_save handler.
    new = [audited.model(**v) for v in audited.values(n, owners)]
    for i, obj in enumerate(new):
        obj.pk = 10**9 + i
    pks = list(audited.model.objects.using(alias).values_list("pk", flat=True)[:BATCH])
    existing = audited.load(pks)
    loaded = [existing[i % len(existing)] for i in range(n)]

    def capture_create(obj: Any) -> None:
        post_save.send(
            sender=audited.model,
            instance=obj,
            created=True,
            update_fields=None,
            raw=False,
            using=alias,
        )

    def capture_update(obj: Any) -> None:
        obj.count += 1
        obj.active = not obj.active
        post_save.send(
            sender=audited.model,
            instance=obj,
            created=False,
            update_fields=None,
            raw=False,
            using=alias,
        )

    memory = [
        Variant(
            "construct PlainRow(**values)", lambda v: plain.model(**v), plain.values(n, owners)
        ),
        Variant(
            "construct AuditedRow(**values)",
            lambda v: audited.model(**v),
            audited.values(n, owners),
        ),
        Variant("capture: post_save of a create", capture_create, new, lambda: rolled_back(alias)),
        Variant(
            "capture: post_save of an update", capture_update, loaded, lambda: rolled_back(alias)
        ),
    ]
    interleave(memory, "1/txn", alias)
    result.breakdown["in memory"] = {v.name: v.samples for v in memory}

    # Round trips: the database's, the outbox row's, the publish's, the broker's.
    payload = {
        "v": 1,
        "contexts": [
            {
                "actor_id": None,
                "actor_repr": "",
                "remote_addr": None,
                "request_id": None,
                "extra": {},
            }
        ],
        "events": [
            {
                "id": "00000000-0000-4000-8000-000000000000",
                "model": "benchapp.auditedrow",
                "pk": 1,
                "repr": "row 1",
                "action": "create",
                "changes": {k: [None, str(v)] for k, v in row_values(1, owners).items()},
                "at": 0.0,
                "ctx": 0,
            }
        ],
    }
    outbox_rows: list[int] = []
    connection = connections[alias]

    def select_1(_: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    def outbox_insert(_: Any) -> None:
        outbox_rows.append(Outbox.objects.using(alias).create(payload=json.dumps(payload)).pk)

    def publish(_: Any) -> None:
        delivery.publish([outbox_rows[0] if outbox_rows else 1], alias)

    pieces = [
        Variant("SELECT 1 (one database round trip)", select_1, range(n)),
        Variant("outbox INSERT alone (autocommit)", outbox_insert, range(n)),
        Variant("delivery.publish([id]) alone", publish, range(n)),
    ]
    raw_key = f"{QUEUE}-raw"
    client = None
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker_url)
        message = "x" * 1500  # about the size of auditq's deliver message

        pieces += [
            Variant("Redis PING (one broker round trip)", lambda _: client.ping(), range(n)),
            Variant(
                "Redis LPUSH of a 1.5 kB message",
                lambda _: client.lpush(raw_key, message),
                range(n),
            ),
        ]
    try:
        interleave(pieces, "1/txn", alias)
    finally:
        if client is not None:
            client.delete(raw_key)
            client.close()
    Outbox.objects.using(alias).filter(pk__in=outbox_rows).delete()
    ledger.extra_messages += n
    ledger.check("breakdown round trips")
    result.breakdown["round trips"] = {v.name: v.samples for v in pieces}

    # The 100/txn outbox row: one payload of 100 events, encoded and inserted at commit.
    event = payload["events"][0]
    big = {**payload, "events": [{**event, "id": f"{i:032x}"} for i in range(BATCH)]}
    big_rows: list[int] = []

    def encode_big(_: Any) -> None:
        json.dumps(big)

    def insert_big(_: Any) -> None:
        with transaction.atomic(using=alias):
            big_rows.append(Outbox.objects.using(alias).create(payload=json.dumps(big)).pk)

    rounds = max(1, n // BATCH)
    batch = [
        Variant("json.dumps of a 100-event payload", encode_big, range(rounds)),
        Variant("outbox INSERT of it in atomic()", insert_big, range(rounds)),
    ]
    interleave(batch, "1/txn", alias)
    Outbox.objects.using(alias).filter(pk__in=big_rows).delete()
    size = len(json.dumps(big)) / 1000
    result.breakdown[f"outbox row of 100 events ({size:.0f} kB), per event"] = {
        v.name: [x / BATCH for x in v.samples] for v in batch
    }


def what_if_one_statement(
    plain: Side, owners: Sequence[int], n: int, ledger: Ledger, result: DbResult
) -> None:
    """PostgreSQL: the row and its outbox row written by ONE autocommit statement.

    Not what auditq does today: floors for designs without BEGIN, COMMIT and a second
    INSERT round trip, against the same raw INSERT. (a) a CTE that inserts the row and
    the outbox row (payload built by the client); (b) an AFTER INSERT trigger that writes
    the outbox row from ``to_jsonb(NEW)``, the way django-pghistory works.
    """
    from django.db import connections

    from auditq.models import Outbox

    alias = plain.alias
    connection = connections[alias]
    table = plain.model._meta.db_table
    names = list(row_values(0, owners))
    columns = ", ".join(f'"{c}"' for c in names)
    marks = ", ".join("%s::jsonb" if c == "data" else "%s" for c in names)
    insert = f'INSERT INTO "{table}" ({columns}) VALUES ({marks}) RETURNING "id"'
    cte = (
        f"WITH r AS ({insert}) "
        'INSERT INTO "auditq_outbox" ("created_at", "payload") '
        "SELECT now(), jsonb_set(%s::jsonb, '{events,0,pk}', to_jsonb(r.id))::text FROM r "
        "RETURNING (\"payload\"::jsonb -> 'events' -> 0 ->> 'pk')::bigint"
    )

    triggered = "bench_triggered_row"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{triggered}" (LIKE "{table}" INCLUDING ALL)')
        cursor.execute(
            "CREATE FUNCTION bench_outbox() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO auditq_outbox (created_at, payload) VALUES (now(), jsonb_build_object("
            "'v', 1, 'contexts', jsonb_build_array(), 'events', jsonb_build_array("
            "jsonb_build_object('id', gen_random_uuid(), 'model', TG_TABLE_NAME, "
            "'pk', NEW.id, 'action', 'create', 'changes', to_jsonb(NEW), 'ctx', 0)))::text); "
            "RETURN NULL; END $$"
        )
        cursor.execute(
            f'CREATE TRIGGER bench_outbox AFTER INSERT ON "{triggered}" '
            "FOR EACH ROW EXECUTE FUNCTION bench_outbox()"
        )
    insert_triggered = insert.replace(f'"{table}"', f'"{triggered}"', 1)

    def params(values: dict[str, Any]) -> list[Any]:
        return [json.dumps(v) if k == "data" else v for k, v in values.items()]

    def payload(values: dict[str, Any]) -> str:
        changes = {k: [None, v] for k, v in values.items()}
        changes["amount"][1] = str(values["amount"])
        changes["happened_at"][1] = values["happened_at"].isoformat()
        event = {"id": "0" * 32, "model": table, "pk": None, "action": "create", "ctx": 0}
        return json.dumps({"v": 1, "contexts": [{}], "events": [{**event, "changes": changes}]})

    def raw_insert(values: dict[str, Any]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(insert, params(values))
            cursor.fetchone()

    def raw_cte(values: dict[str, Any]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(cte, [*params(values), payload(values)])
            cursor.fetchone()

    def raw_trigger(values: dict[str, Any]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(insert_triggered, params(values))
            cursor.fetchone()

    variants = [
        Variant("raw INSERT ... RETURNING (no outbox)", raw_insert, plain.values(n, owners)),
        Variant("(a) + outbox row in the same statement", raw_cte, plain.values(n, owners)),
        Variant("(b) + outbox row by AFTER INSERT trigger", raw_trigger, plain.values(n, owners)),
        Variant(
            "plain create, ORM save (reference)",
            creator(plain.model, alias),
            plain.values(n, owners),
        ),
    ]
    interleave(variants, "1/txn", alias)
    written = Outbox.objects.using(alias).count()
    if written != 2 * n:
        raise BenchError(f"what-if: {written} outbox rows, expected {2 * n}")
    Outbox.objects.using(alias).all().delete()
    ledger.check("what-if")
    result.breakdown["what if, 1/txn: one statement, no BEGIN/COMMIT (raw SQL)"] = {
        v.name: v.samples for v in variants
    }


# --------------------------------------------------------------------------- report


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x"


def ratio_of(cell: dict[str, list[float]]) -> float:
    return median(cell["audited"]) / median(cell["plain"])


def report(results: list[DbResult], ops: int, broker: str) -> list[str]:
    lines: list[str] = []
    out = lines.append
    for res in results:
        out("")
        out(f"{res.name} ({res.version}): median us per op, {ops} ops per cell, broker {broker}")
        out(f"{'op':<7} {'mode':<8} {'plain':>8} {'audited':>8} {'ratio':>7} {'target':>8}  met")
        for op in OPS:
            for mode in MODES:
                cell = res.cells[(op, mode)]
                ratio, target = ratio_of(cell), TARGETS[mode]
                out(
                    f"{op:<7} {mode:<8} {median(cell['plain']):>8.1f} "
                    f"{median(cell['audited']):>8.1f} {fmt_ratio(ratio):>7} "
                    f"{'<= ' + fmt_ratio(target):>8}  {'yes' if ratio <= target else 'NO'}"
                )
        lp, la = median(res.load["plain"]), median(res.load["audited"])
        out(
            f"context, not a target: loading rows (SELECT of 100 by pk), per row: "
            f"plain {lp:.1f} us, audited {la:.1f} us ({fmt_ratio(la / lp)}: post_init snapshot)"
        )
        out("")
        source = res.statements[("create", "1/txn")]["audited"]["source"]
        what = (
            "database round trips per op"
            if res.name == "PostgreSQL"
            else "calls into SQLite per op (in process, no network)"
        )
        out(f"{res.name}: {what}, counted by {source}; what the audited side sends")
        head = f"{'op':<7} {'mode':<8} {'plain':>6} {'audited':>8}"
        out(f"{head}  audited sequence (first op / batch)")
        for op in OPS:
            for mode in MODES:
                cell = res.statements[(op, mode)]
                out(
                    f"{op:<7} {mode:<8} {cell['plain']['round_trips_per_op']:>6.2f} "
                    f"{cell['audited']['round_trips_per_op']:>8.2f}  {cell['audited']['sequence']}"
                )
        seq = res.statements[("create", "1/txn")]["plain"]["sequence"]
        out(f"(plain create, 1/txn: {seq}; publishes happen only on the audited side)")
        for note in res.notes:
            out(f"note: {note}")
        out("")
        out(f"{res.name}: breakdown, median us per op (delta against the first line of each group)")
        for group, variants in res.breakdown.items():
            out(f"  {group}")
            base = None
            for name, samples in variants.items():
                value = median(samples)
                delta = "" if base is None else f"{value - base:+9.1f}"
                if base is None and group.startswith(("create", "what if")):
                    base = value
                out(f"    {name:<44} {value:>9.1f} {delta}")
    out("")
    out("Summary (ratio audited/plain of the medians; targets from DESIGN.md)")
    for res in results:
        for mode in MODES:
            ratios = [ratio_of(res.cells[(op, mode)]) for op in OPS]
            met = sum(r <= TARGETS[mode] for r in ratios)
            shown = ", ".join(f"{op} {fmt_ratio(r)}" for op, r in zip(OPS, ratios, strict=True))
            out(
                f"  {res.name:<10} {mode:<8} target <= {fmt_ratio(TARGETS[mode])}: "
                f"{met}/3 met ({shown})"
            )
        out(
            f"  {res.name:<10} sanity: {res.checked_transactions} audited transactions checked "
            "(one outbox row each with one event per op, one message each in the queue)"
        )
    return lines


def to_json(results: list[DbResult], args: argparse.Namespace) -> dict[str, Any]:
    def stats(samples: Sequence[float]) -> dict[str, float]:
        return {
            "n": len(samples),
            "median": median(samples),
            "p10": quantile(samples, 0.1),
            "p90": quantile(samples, 0.9),
            "mean": statistics.fmean(samples) if samples else float("nan"),
        }

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "ops": args.ops,
        "broker": args.broker,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "databases": [
            {
                "name": r.name,
                "version": r.version,
                "cells": {
                    f"{op} {mode}": {side: stats(s) for side, s in c.items()}
                    for (op, mode), c in r.cells.items()
                },
                "load": {side: stats(s) for side, s in r.load.items()},
                "statements": {f"{op} {mode}": c for (op, mode), c in r.statements.items()},
                "breakdown": {
                    g: {name: stats(s) for name, s in v.items()} for g, v in r.breakdown.items()
                },
            }
            for r in results
        ],
    }


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    pg_url = postgres_url()
    pg_name = f"auditq_bench_{os.getpid()}"
    tmpdir = tempfile.mkdtemp(prefix="auditq-bench-")
    databases: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for key in keys:
        alias = "default" if not databases else key
        aliases[key] = alias
        if key == "postgres":
            databases[alias] = postgres_settings(pg_url, pg_name)
        else:
            databases[alias] = {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tmpdir, "bench.sqlite3"),
            }
    broker_url = (
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
        if args.broker == "redis"
        else "memory://"
    )
    created_pg = False
    try:
        if "postgres" in keys:
            server_execute(pg_url, f'DROP DATABASE IF EXISTS "{pg_name}"')
            server_execute(pg_url, f'CREATE DATABASE "{pg_name}"')
            created_pg = True
        app = configure(databases, broker_url)
        import django

        print(
            f"auditq request-path bench: Python {platform.python_version()}, "
            f"Django {django.get_version()}, {os.cpu_count()} CPUs, broker {broker_url}, "
            f"{args.ops} ops per cell"
        )
        results = []
        with broker_queue(app) as drain:
            for key in keys:
                results.append(run_database(key, aliases[key], args.ops, drain, broker_url))
        lines = report(results, args.ops, args.broker)
        print("\n".join(lines))
        if args.json:
            Path(args.json).write_text(json.dumps(to_json(results, args), indent=2) + "\n")
            print(f"\nfigures written to {args.json}")
        return 0
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if created_pg:
            server_execute(pg_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
