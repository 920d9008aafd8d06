#!/usr/bin/env python
"""Request-path cost of auditing, side by side: plain, auditq, django-auditlog,
django-simple-history and django-pghistory.

Usage::

    .venv/bin/python bench/request_path.py [--ops N] [--db postgres|sqlite|both]
                                           [--warmup N] [--json FILE] [--quick]
                                           [--bulk-only]

Method. Each contender has its own model with the same eight fields (``benchapp``). For
each database, mode and op, the contenders take turns in **blocks of 100 back-to-back
ops**, the order rotated every round. A block is timed as a whole: the wall time of the
100 ops (commits included), plus the CPU time the process still spends once the block is
over, until it is idle (work left to a background thread is charged to the contender that
left it, never to the next one). Time per op = block time / 100. The figure is the median
over the blocks, with p10-p90 as the spread, and the ratio is median / median of
``plain``. The first blocks of each cell are warm-up and are discarded.

- modes: ``1/txn`` (autocommit, one op per transaction, a bare ``save()`` in a view) and
  ``100/txn`` (the block is one ``transaction.atomic()``, commit included);
- ops: ``create`` (``Model(**values).save()``), ``update`` (a loaded instance, two fields
  changed, ``save()``), ``delete`` (``obj.delete()`` of a loaded instance);
- bulk: ``bulk_create()`` of 1,000 rows, then ``QuerySet.update()`` of them all, each
  contender in turn, 12 rounds after a warm-up one; beside them "auditq's SQL alone":
  the statements auditq's ``update()`` sends (the ``SELECT`` of the keys and old values,
  ``FOR UPDATE`` on PostgreSQL, the ``UPDATE`` of those keys, the outbox row with
  auditq's payload of that round, the commit), sent by hand on the plain model: what
  the database alone makes an audited ``update()`` cost, with none of auditq's Python;
- queries per op: one more block per cell, untimed, under ``CaptureQueriesContext``
  (every statement, ``BEGIN``, ``COMMIT`` and savepoint; not what triggers do inside
  PostgreSQL);
- sanity: after every cell each library must have recorded one row per op, and auditq
  between one outbox row per transaction and one per op; otherwise the run fails (exit 2).

Each database runs in its own process, where it is Django's ``default`` database.
PostgreSQL: a throwaway database created next to ``DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/test``) and dropped at the end. SQLite: a file in a
temporary directory; django-pghistory is skipped there (it needs PostgreSQL triggers).
auditq runs as in production: Celery with ``task_always_eager=False``, JSON, the Redis
broker at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``; its ``auditq-bench``
queue is purged and deleted at the end). No worker runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from benchapp.values import row_values  # noqa: E402
from benchdb import delete_queue, postgres_settings, postgres_url, server_execute  # noqa: E402

QUEUE = "auditq-bench"
BLOCK = 100  # ops per block; also the ops per transaction of the 100/txn mode
READ_ROWS = 1000  # rows per read: list(Model.objects.all()[:READ_ROWS])
READ_ROUNDS = 60  # reads per contender (after the warm-up ones)
READ_TARGET = 1.03  # auditq's reads, x plain: loading rows must cost what it costs without it
BULK_ROWS = 1000  # rows per bulk_create() and per QuerySet.update()
BULK_ROUNDS = 12  # bulk rounds per contender (after one warm-up round)
BULK_TARGETS = {"bulk_create": 1.5, "update": 2.0}  # auditq, x plain
OPS = ("create", "update", "delete")
MODES = ("1/txn", "100/txn")
DB_NAMES = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
X = "\N{MULTIPLICATION SIGN}"
IDLE_CPU_NS = 100_000  # a 2 ms interval with less CPU than this: the process is idle


@dataclass(frozen=True)
class Spec:
    """A contender: its model, the app it needs, and the package it measures."""

    name: str
    model: str
    app: str | None = None
    package: str | None = None
    postgres_only: bool = False


CONTENDERS = (
    Spec("plain", "PlainRow"),
    Spec("auditq", "AuditqRow", package="auditq"),
    Spec("auditq + handler", "AuditqHandlerRow"),
    Spec("handler only", "HandlerRow"),
    Spec("django-auditlog", "AuditlogRow", "auditlog", "django-auditlog"),
    Spec("django-simple-history", "SimpleHistoryRow", "simple_history", "django-simple-history"),
    Spec("django-pghistory", "PghistoryRow", "pghistory", "django-pghistory", True),
)
LIBRARIES = ("django-auditlog", "django-simple-history", "django-pghistory")
OUTBOX_CONTENDERS = ("auditq", "auditq + handler", "handler only")


def targets(db: str, mode: str) -> tuple[float, float | None]:
    """auditq's targets: (max ratio to plain, min factor of added cost vs the libraries)."""
    if mode == "100/txn":
        return (1.10 if db == "PostgreSQL" else 1.15), 10.0
    return (1.15 if db == "PostgreSQL" else 1.5), None


class BenchError(Exception):
    """The run is not measuring what it claims to (a contender recorded nothing...)."""


# --------------------------------------------------------------------------- set-up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Request-path cost of audit libraries.")
    parser.add_argument("--ops", type=int, default=2000, help="timed ops per cell (x100)")
    parser.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument(
        "--bulk-only", action="store_true", help="only bulk_create() and update() of 1,000 rows"
    )
    parser.add_argument("--warmup", type=int, default=3, help="warm-up blocks per cell")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.ops, args.warmup = 2 * BLOCK, 1
    if args.ops < BLOCK or args.ops % BLOCK:
        parser.error(f"--ops must be a positive multiple of {BLOCK}")
    return args


def contender_apps(db: str) -> list[str]:
    specs = [s for s in CONTENDERS if s.app and not (s.postgres_only and db != "postgres")]
    apps = [s.app for s in specs if s.app]
    return [*apps, "pgtrigger"] if "pghistory" in apps else apps


def configure(database: dict[str, Any], db: str) -> Any:
    """Set Django up with every contender's app; return a Celery app that really publishes."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="auditq-bench",
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "auditq",
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_celery_results",
            *contender_apps(db),
            "benchapp",
        ],
        DATABASES={"default": database},
        AUDITQ={"QUEUE": QUEUE},
        CELERY_BROKER_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        CELERY_TASK_SERIALIZER="json",
        CELERY_RESULT_SERIALIZER="json",
        CELERY_ACCEPT_CONTENT=["json"],
        CELERY_RESULT_BACKEND="django-db",
        CELERY_TASK_ALWAYS_EAGER=False,
        CELERY_TASK_ACKS_LATE=True,
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {"auditq": {"handlers": ["console"], "level": "WARNING"}},
        },
    )
    django.setup()

    from celery import Celery

    app = Celery("auditq_bench")  # what a project's proj/celery.py does
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()
    app.set_default()
    if app.conf.task_always_eager:
        raise BenchError("task_always_eager is on: auditq would record in the request")
    return app


@contextlib.contextmanager
def broker_queue(app: Any) -> Iterator[None]:
    """Declare auditq's bench queue (as a worker would); purge and delete it at the end."""
    from kombu import Exchange, Queue

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)(channel).declare()
        channel.queue_purge(QUEUE)
    try:
        yield
    finally:
        delete_queue(app, QUEUE)


def create_tables(db: str) -> None:
    """``migrate``, then ``--run-syncdb`` for ``benchapp`` (its history tables point at
    ``auth_user``); on PostgreSQL also ``pgtrigger.install()``, in case syncdb did not
    create pghistory's triggers (the sanity checks tell whether events are written)."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    if db == "postgres":
        import pgtrigger

        pgtrigger.install()


# --------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    name: str
    model: type
    recorded: Callable[[], int] | None  # rows it has written so far; None for plain

    def check(self, what: str, before: int, ops: int, transactions: int) -> None:
        """Fail unless the contender recorded the ``ops`` just made."""
        if self.recorded is None:
            return
        grown = self.recorded() - before
        if self.name in OUTBOX_CONTENDERS:
            # At least one outbox row per transaction, at most one per op.
            ok, expected = transactions <= grown <= ops, f"{transactions} to {ops} outbox rows"
        else:
            ok, expected = grown == ops, f"{ops} rows"
        if not ok:
            raise BenchError(f"{self.name}, {what}: recorded {grown}, expected {expected}")


def count_sql(sql: str) -> Callable[[], int]:
    def count() -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    return count


def contenders(db: str) -> list[Contender]:
    from django.apps import apps

    found = []
    for spec in CONTENDERS:
        if spec.postgres_only and db != "postgres":
            continue
        model = apps.get_model("benchapp", spec.model)
        found.append(Contender(spec.name, model, recorder(spec.name, model)))
    return found


def recorder(name: str, model: type) -> Callable[[], int] | None:
    """How to count what a contender has recorded, through its public API."""
    if name in OUTBOX_CONTENDERS:
        # No worker runs: the outbox rows holding this contender's model (a JSON string).
        label = model._meta.label_lower  # type: ignore[attr-defined]
        return count_sql(f"SELECT count(*) FROM auditq_outbox WHERE payload LIKE '%%\"{label}\"%%'")
    if name == "django-auditlog":
        from auditlog.models import LogEntry

        return LogEntry.objects.count
    if name == "django-simple-history":
        return model.history.count  # type: ignore[attr-defined]
    if name == "django-pghistory":
        return model.pgh_event_model.objects.count  # type: ignore[attr-defined]
    return None


def creator(model: type) -> Callable[[dict[str, Any]], None]:
    def create(values: dict[str, Any]) -> None:
        model(**values).save()

    return create


def update(obj: Any) -> None:
    obj.count += 1
    obj.title = f"{obj.title} (edited)"
    obj.save()


def delete(obj: Any) -> None:
    obj.delete()


# --------------------------------------------------------------------------- timing


def settle() -> int:
    """Wait until this process is idle; return the CPU time (ns) it spent meanwhile."""
    clock = time.process_time_ns
    start = last = clock()
    for _ in range(500):
        time.sleep(0.002)
        now = clock()
        if now - last < IDLE_CPU_NS:
            break
        last = now
    return last - start


@dataclass
class Block:
    wall_ns: int
    tail_ns: int  # CPU after the block, until the process was idle
    ops: int = BLOCK

    @property
    def us_per_op(self) -> float:
        return (self.wall_ns + self.tail_ns) / 1000 / self.ops


def run_block(fn: Callable[[Any], None], items: Sequence[Any], mode: str) -> Block:
    """Run ``fn`` over the block's items, back to back, and time the whole block."""
    from django.db import transaction

    clock = time.perf_counter_ns
    start = clock()
    if mode == "1/txn":
        for item in items:
            fn(item)
    else:
        with transaction.atomic():
            for item in items:
                fn(item)
    wall = clock() - start
    return Block(wall, settle())


def count_queries(
    fn: Callable[[Any], None], items: Sequence[Any], mode: str
) -> tuple[float, list[str]]:
    """Statements per op over one untimed block (``BEGIN``, ``COMMIT`` and savepoints
    included), and the statements of its last op (caches warm)."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    txn = transaction.atomic() if mode == "100/txn" else contextlib.nullcontext()
    with CaptureQueriesContext(connection) as captured, txn:
        for item in items[:-1]:
            fn(item)
        mark = len(captured.captured_queries)
        fn(items[-1])
        last = [q["sql"] for q in captured.captured_queries[mark:]]
    return len(captured.captured_queries) / len(items), [label(sql) for sql in last]


TABLE = re.compile(r'(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|FROM)\s+"?(\w+)"?', re.IGNORECASE)


def label(sql: str) -> str:
    """``INSERT INTO "auditq_outbox" ...`` -> ``INSERT auditq_outbox``."""
    verb = sql.split(None, 1)[0].upper()
    match = TABLE.search(sql)
    if verb in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK") or not match:
        return verb
    table = match.group(1)
    also = " (+ auditq_outbox row)" if "auditq_outbox" in sql and "outbox" not in table else ""
    return f"{verb} {table.removeprefix('benchapp_')}{also}"


@dataclass
class Cell:
    """One contender's figures for one (database, mode, op)."""

    blocks: list[Block] = field(default_factory=list)
    queries_per_op: float = 0.0
    one_op: list[str] = field(default_factory=list)  # the statements of one op

    def values(self) -> list[float]:
        return [b.us_per_op for b in self.blocks]

    @property
    def median(self) -> float:
        return statistics.median(self.values())

    def quantile(self, q: float) -> float:
        ordered = sorted(self.values())
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def tail_us(self) -> float:
        return statistics.median(b.tail_ns / 1000 / BLOCK for b in self.blocks)


def measure_op(
    op: str,
    mode: str,
    players: Sequence[Contender],
    fns: dict[str, Callable[[Any], None]],
    items: dict[str, list[Any]],
    warmup: int,
) -> dict[str, Cell]:
    """One cell: a counted block, then rounds of blocks taken in turn, order rotated."""
    cells = {c.name: Cell() for c in players}
    before = {c.name: c.recorded() if c.recorded else 0 for c in players}
    for c in players:
        counted = count_queries(fns[c.name], items[c.name][:BLOCK], mode)
        cells[c.name].queries_per_op, cells[c.name].one_op = counted
    rounds = len(items[players[0].name]) // BLOCK - 1
    gc.collect()
    for k in range(rounds):
        shift = k % len(players)
        for c in [*players[shift:], *players[:shift]]:
            start = (k + 1) * BLOCK
            block = run_block(fns[c.name], items[c.name][start : start + BLOCK], mode)
            if k >= warmup:
                cells[c.name].blocks.append(block)
    ops = (rounds + 1) * BLOCK
    for c in players:
        c.check(f"{op} {mode}", before[c.name], ops, ops if mode == "1/txn" else rounds + 1)
    return cells


def measure_reads(
    players: Sequence[Contender], rounds: int, warmup: int, size: int
) -> dict[str, Cell]:
    """``list(Model.objects.all()[:size])`` per contender, in turns, order rotated:
    loading rows that are never saved, and dropping them (one op is one list of ``size``
    rows). Each contender pays for freeing its own rows, never the next one."""
    cells = {c.name: Cell() for c in players}
    clock = time.perf_counter_ns
    gc.collect()
    for k in range(warmup + rounds):
        shift = k % len(players)
        for c in [*players[shift:], *players[:shift]]:
            query = c.model.objects.all()[:size]
            start = clock()
            rows = list(query)
            count = len(rows)
            del rows
            wall = clock() - start
            if count != size:
                raise BenchError(f"{c.name}: read {count} rows, not {size}")
            if k >= warmup:
                cells[c.name].blocks.append(Block(wall, 0, ops=1))
    return cells


def statements_alone(model: type, value: str, payload: str) -> None:
    """auditq's statements for ``model.objects.update(title=value)``, with none of its
    Python: the ``SELECT`` of the keys and old values (``FOR UPDATE`` where the database
    has it), the ``UPDATE`` of exactly those keys, and the outbox row (``payload``) with
    the commit. What the database alone makes an audited ``update()`` cost."""
    from django.db import connection, transaction

    from auditq.backends import backend

    found = backend(connection)
    name = model._meta.db_table
    table = connection.ops.quote_name(name)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, title FROM {table}{lock}")
            keys = [row[0] for row in cursor.fetchall()]
            where, params = found.keys_where(connection, name, "id", keys)
            cursor.execute(f"UPDATE {table} SET title = %s WHERE {where}", [value, *params])
        found.write_outbox(connection, payload, commit=True, notify=False)


STATEMENTS_ALONE = "auditq's SQL alone"


def measure_bulk(players: Sequence[Contender], owners: Sequence[int]) -> dict[str, dict]:
    """``bulk_create()`` of BULK_ROWS rows, then ``QuerySet.update()`` of all of them, per
    contender, in turns (the rows deleted, untimed, after each round); then
    :func:`statements_alone` on the plain model, with the payload auditq wrote."""
    from auditq.models import Outbox

    cells: dict[str, dict[str, Cell]] = {
        op: {c.name: Cell() for c in players} for op in BULK_TARGETS
    }
    cells["update"][STATEMENTS_ALONE] = Cell()
    plain = next(c for c in players if c.name == "plain")
    payload = ""
    clock = time.perf_counter_ns
    for k in range(1 + BULK_ROUNDS):
        shift = k % len(players)
        for c in [*players[shift:], *players[:shift]]:
            rows = [c.model(**row_values(i, owners)) for i in range(BULK_ROWS)]
            start = clock()
            c.model.objects.bulk_create(rows)
            created = clock() - start
            start = clock()
            updated = c.model.objects.update(title=f"round {k}")
            wall = clock() - start
            if updated != BULK_ROWS:
                raise BenchError(f"{c.name}: update() changed {updated} rows, not {BULK_ROWS}")
            if c.name == "auditq":  # untimed: the row its update() wrote
                payload = Outbox.objects.order_by("-id").values_list("payload", flat=True)[0]
            c.model.objects.all().delete()
            if k:
                cells["bulk_create"][c.name].blocks.append(Block(created, 0, ops=1))
                cells["update"][c.name].blocks.append(Block(wall, 0, ops=1))
        plain.model.objects.bulk_create(
            [plain.model(**row_values(i, owners)) for i in range(BULK_ROWS)]
        )
        start = clock()
        statements_alone(plain.model, f"round {k}", payload)
        wall = clock() - start
        plain.model.objects.all().delete()
        if k:
            cells["update"][STATEMENTS_ALONE].blocks.append(Block(wall, 0, ops=1))
    return {op: {name: cell_json(cell) for name, cell in ops.items()} for op, ops in cells.items()}


def report_bulk(result: dict[str, Any]) -> list[str]:
    lines = []
    for op, cells in result["bulk"].items():
        plain = cells["plain"]
        lines += [
            "",
            f"{result['versions']['database']}, {op} of {BULK_ROWS} rows: median over "
            f"{plain['blocks']} calls, {X}plain, (p10-p90 µs); only auditq and "
            "django-pghistory record them",
        ]
        lines += [f"{name:<22} {fmt_cell(cell, plain)}" for name, cell in cells.items()]
    return lines


def measure_mode(
    mode: str, players: Sequence[Contender], owners: Sequence[int], n: int, warmup: int
) -> dict[str, dict[str, Cell]]:
    """create, update and delete ``n`` rows per contender (the counted block included)."""
    values = {c.name: [row_values(i, owners) for i in range(n)] for c in players}
    creates = {c.name: creator(c.model) for c in players}
    result = {"create": measure_op("create", mode, players, creates, values, warmup)}
    if mode == MODES[0]:
        result["read"] = measure_reads(players, READ_ROUNDS, warmup, min(READ_ROWS, n))
    for op, fn in (("update", update), ("delete", delete)):
        loaded = {c.name: list(c.model.objects.order_by("pk")) for c in players}
        for c in players:
            if len(loaded[c.name]) != n:
                raise BenchError(f"{c.name}: {len(loaded[c.name])} rows before {op}, not {n}")
        result[op] = measure_op(op, mode, players, dict.fromkeys(loaded, fn), loaded, warmup)
    for c in players:
        if c.model.objects.exists():
            raise BenchError(f"{c.name}: rows left after delete {mode}")
    return result


# --------------------------------------------------------------------------- one database


def server_versions(db: str) -> dict[str, str]:
    import redis
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version" if db == "postgres" else "SELECT sqlite_version()")
        database = cursor.fetchone()[0]
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        broker = client.info("server")["redis_version"]
    finally:
        client.close()
    return {"database": f"{DB_NAMES[db]} {database.split()[0]}", "redis": broker}


def run_database(db: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure every contender on one database; the caller made it Django's default."""
    from benchapp.models import Owner

    create_tables(db)
    players = contenders(db)
    owners = [Owner.objects.create(name=f"owner {i}").pk for i in range(10)]
    versions = server_versions(db)
    print(f"== {versions['database']}: {', '.join(c.name for c in players)}", flush=True)
    n = args.ops + (args.warmup + 1) * BLOCK
    modes = {}
    for mode in () if args.bulk_only else MODES:
        started = time.monotonic()
        modes[mode] = measure_mode(mode, players, owners, n, args.warmup)
        print(f"   {mode} measured in {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    bulk = measure_bulk(players, owners)
    print(f"   bulk measured in {time.monotonic() - started:.0f} s", flush=True)
    skipped = [s.name for s in CONTENDERS if s.postgres_only and db != "postgres"]
    return {
        "bulk": bulk,
        "db": DB_NAMES[db],
        "versions": versions,
        "skipped": skipped,
        "modes": {
            mode: {
                op: {name: cell_json(cell) for name, cell in cells.items()}
                for op, cells in ops.items()
            }
            for mode, ops in modes.items()
        },
    }


def cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "median_us": cell.median,
        "p10_us": cell.quantile(0.1),
        "p90_us": cell.quantile(0.9),
        "mean_us": statistics.fmean(cell.values()),
        "blocks": len(cell.blocks),
        "tail_us": cell.tail_us,
        "queries_per_op": cell.queries_per_op,
        "one_op": cell.one_op,
    }


def database_settings(db: str, pg_name: str, tmpdir: str) -> dict[str, Any]:
    if db == "postgres":
        return postgres_settings(postgres_url(), pg_name)
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(tmpdir, "bench.sqlite3")}


def measure_in_this_process(db: str, args: argparse.Namespace) -> dict[str, Any]:
    """Create the database, configure Django on it, measure, drop it."""
    pg_url, pg_name = postgres_url(), f"auditq_bench_{os.getpid()}"
    tmpdir = tempfile.mkdtemp(prefix="auditq-bench-")
    created = False
    try:
        if db == "postgres":
            server_execute(pg_url, f'CREATE DATABASE "{pg_name}"')
            created = True
        app = configure(database_settings(db, pg_name, tmpdir), db)
        with broker_queue(app):
            return run_database(db, args)
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if created:
            server_execute(pg_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def fmt_cell(cell: dict[str, Any], plain: dict[str, Any]) -> str:
    ratio = cell["median_us"] / plain["median_us"]
    spread = f"{cell['p10_us']:.0f}-{cell['p90_us']:.0f}"
    return f"{cell['median_us']:>6.0f} µs {ratio:>5.2f}{X} ({spread})"


def fmt_factor(factor: float) -> str:
    """Above 100x, auditq's added cost is lost in the noise: the exact figure means little."""
    if factor == float("inf"):
        return "auditq added nothing measurable"
    return f"{factor:.1f}{X}" if factor <= 100 else f"> 100{X}"


def added_cost_factor(ops: dict[str, Any], op: str, library: str) -> float:
    """(library - plain) / (auditq - plain): how many times auditq's added cost."""
    plain = ops[op]["plain"]["median_us"]
    mine = ops[op]["auditq"]["median_us"] - plain
    theirs = ops[op][library]["median_us"] - plain
    return theirs / mine if mine > 0 else float("inf")


def report_mode(result: dict[str, Any], mode: str) -> list[str]:
    ops = result["modes"][mode]
    names = list(ops["create"])
    blocks = ops["create"]["plain"]["blocks"]
    what = "autocommit, one op per transaction" if mode == "1/txn" else "100 ops per atomic()"
    lines = [
        "",
        f"{result['versions']['database']}, {mode} ({what}): median per op over {blocks} "
        f"blocks of {BLOCK}, {X}plain, (p10-p90 µs)",
        f"{'':<22} " + " ".join(f"{op:<30}" for op in OPS) + " queries/op c/u/d",
    ]
    for name in names:
        cells = " ".join(f"{fmt_cell(ops[op][name], ops[op]['plain']):<30}" for op in OPS)
        queries = "/".join(f"{ops[op][name]['queries_per_op']:g}" for op in OPS)
        lines.append(f"{name:<22} {cells} {queries}")
    tail = "/".join(f"{ops[op]['auditq']['tail_us']:.0f}" for op in OPS)
    lines.append(f"  auditq's background work after its blocks, charged to it: {tail} µs/op")
    for library in (lib for lib in LIBRARIES if lib in names):
        factors = ", ".join(f"{op} {fmt_factor(added_cost_factor(ops, op, library))}" for op in OPS)
        lines.append(f"  added cost of {library} / auditq's: {factors}")
    for skipped in result["skipped"]:
        lines.append(f"  {skipped}: skipped, it needs PostgreSQL")
    return lines


def report_reads(result: dict[str, Any]) -> list[str]:
    """Loading rows that are never saved: one list per op."""
    cells = result["modes"][MODES[0]]["read"]
    plain = cells["plain"]
    lines = [
        "",
        f"{result['versions']['database']}, read: list(Model.objects.all()[:{READ_ROWS}]), "
        f"median over {plain['blocks']} lists, {X}plain, (p10-p90 µs)",
    ]
    for name, cell in cells.items():
        lines.append(f"{name:<22} {fmt_cell(cell, plain)}")
    return lines


def report_statements(result: dict[str, Any], mode: str = "1/txn") -> list[str]:
    """What one op sends to the database, per contender (1/txn)."""
    ops = result["modes"][mode]
    lines = ["", f"{result['db']}, {mode}: the statements of one op"]
    for name in ops["create"]:
        for op in OPS:
            lines.append(f"  {name:<22} {op:<6} {', '.join(ops[op][name]['one_op'])}")
    return lines


def bulk_verdicts(result: dict[str, Any]) -> list[str]:
    """auditq's bulk targets for this database, PASS or MISS per call."""
    lines = []
    for op, target in BULK_TARGETS.items():
        bulk = result["bulk"][op]
        ratio = bulk["auditq"]["median_us"] / bulk["plain"]["median_us"]
        mark = "PASS" if ratio <= target else "MISS"
        lines.append(
            f"{result['db']:<10} {'':<7} {op:<6} auditq ≤ {target:.2f}{X}: {mark} ({ratio:.2f}{X})"
        )
    return lines


def verdicts(result: dict[str, Any], mode: str) -> list[str]:
    """auditq's targets for this database and mode, PASS or MISS per op."""
    ops = result["modes"][mode]
    max_ratio, min_factor = targets(result["db"], mode)
    lines = []
    if "read" in ops:
        ratio = ops["read"]["auditq"]["median_us"] / ops["read"]["plain"]["median_us"]
        mark = "PASS" if ratio <= READ_TARGET else "MISS"
        lines.append(
            f"{result['db']:<10} {'':<7} {'read':<6} auditq ≤ {READ_TARGET:.2f}{X}: {mark} "
            f"({ratio:.2f}{X})"
        )
    for op in OPS:
        ratio = ops[op]["auditq"]["median_us"] / ops[op]["plain"]["median_us"]
        mark = "PASS" if ratio <= max_ratio else "MISS"
        lines.append(f"{result['db']:<10} {mode:<7} {op:<6} auditq ≤ {max_ratio:.2f}{X}: {mark}")
        lines[-1] += f" ({ratio:.2f}{X})"
        if min_factor is None:
            continue
        for library in ("django-auditlog", "django-simple-history"):
            factor = added_cost_factor(ops, op, library)
            mark = "PASS" if factor >= min_factor else "MISS"
            lines.append(
                f"{result['db']:<10} {mode:<7} {op:<6} added cost ≥ {min_factor:.0f}{X} less "
                f"than {library}: {mark} ({fmt_factor(factor)})"
            )
    return lines


def report(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for result in results:
        for mode in result["modes"]:
            lines += report_mode(result, mode)
        if result["modes"]:
            lines += report_reads(result)
        lines += report_bulk(result)
        if result["modes"]:
            lines += report_statements(result)
    lines += ["", "Targets (auditq):"]
    for result in results:
        lines += ["  " + line for line in bulk_verdicts(result)]
        for mode in result["modes"]:
            lines += ["  " + line for line in verdicts(result, mode)]
    return lines


def environment() -> dict[str, Any]:
    packages = ["Django", "celery", "kombu", "redis", "psycopg"]
    packages += [s.package for s in CONTENDERS if s.package]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "packages": {p: version(p) for p in packages},
    }


# --------------------------------------------------------------------------- main


def run_children(args: argparse.Namespace, dbs: Sequence[str]) -> list[dict[str, Any]]:
    """Measure each database in a process of its own (Django's settings are per process)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="auditq-bench-") as tmp:
        for db in dbs:
            out = os.path.join(tmp, f"{db}.json")
            command = [sys.executable, __file__, "--db", db, "--ops", str(args.ops)]
            command += ["--warmup", str(args.warmup), "--json", out, "--child"]
            command += ["--bulk-only"] if args.bulk_only else []
            child = subprocess.Popen(command)
            try:
                code = child.wait()
            finally:
                if child.poll() is None:  # interrupted: let it clean up after itself
                    child.terminate()
                    child.wait()
            if code:
                raise BenchError(f"the {DB_NAMES[db]} run failed (see above)")
            results += json.loads(Path(out).read_text())["databases"]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the throwaway database and the queue are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    env = environment()
    if not args.child:
        versions = ", ".join(f"{p} {v}" for p, v in env["packages"].items())
        print(f"request-path bench, {env['date']}: Python {env['python']}, {env['cpus']} CPUs")
        print(f"{versions}; {args.ops} timed ops per cell", flush=True)
    try:
        if len(dbs) > 1:
            results = run_children(args, dbs)
        else:
            results = [measure_in_this_process(dbs[0], args)]
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        return 2
    if not args.child:  # a child's figures are reported by its parent
        print("\n".join(report(results)), flush=True)
    env["load_average_end"] = os.getloadavg()
    if args.json:
        data = {**env, "ops": args.ops, "warmup_blocks": args.warmup, "databases": results}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        if not args.child:
            print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
