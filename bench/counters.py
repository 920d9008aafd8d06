#!/usr/bin/env python
"""Counter caches: auditq's ``@counter_cache`` against a synchronous ``F()`` update.

Usage::

    .venv/bin/python bench/counters.py [--children N] [--ops N] [--writers W]
                                       [--workers K] [--timeout S] [--warmup N]
                                       [--json FILE] [--quick]

Method. A throwaway PostgreSQL database and the worker bench's Django project
(``worker_settings``, ``worker_celery``; see ``worker.py``, whose code this reuses), with
three children of the same eight fields (``benchapp``): ``CountedChild``, whose
``@counter_cache("parent", field="children")`` keeps ``CounterParent.children``;
``PlainChild``, the same model without the counter; ``SyncChild``, whose parent
(``SyncParent``) the request keeps itself: the insert and
``SyncParent.objects.filter(pk=...).update(children=F("children") + 1)`` in one
``transaction.atomic()``.

1. **Request path** (no worker running, as in ``request_path.py``, whose block helpers
   this uses): ``plain``, ``counter cache`` and ``sync F()`` creates, autocommit, in turns
   of blocks of 100 back-to-back ops, the order rotated every round; a block's time
   includes the CPU its process still spends after it (a background thread's work is
   charged to the one that left it). Median per op, p10-p90, ratio to plain. Then the
   workers start and the counted parent must settle to the number of its children.
2. **Coalescing.** ``--workers`` real ``celery worker`` processes (``-P solo``: each runs
   auditq's relay thread and the flush tasks) consume auditq's queue. ``--writers``
   processes (this script with ``--writer``) insert ``--children`` children spread evenly
   over 1 parent and then over 100 new parents, each ``create()`` its own transaction:
   first counted children, then synchronous ones. A statement-level trigger on each
   parent table (``AFTER UPDATE ... REFERENCING NEW TABLE ... FOR EACH STATEMENT``)
   writes one row per ``UPDATE`` statement with the keys it updated into a side table:
   the statements, and the most any one parent row got. The script polls the parents
   (every 10 ms once the writers are done) until every counter equals its share, and
   reports the time from the last commit until then; then, once no outbox row and no
   delta is left and two flush delays have passed, every counter must still equal
   ``count(*)`` of its children. Otherwise, or if they do not settle within
   ``--timeout``, the run fails (exit 2).

Target: at most one ``UPDATE`` of the hot parent per 100 increments (100 per 10,000), and
an exact result. At the end the workers are stopped, the queue deleted and the database
dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from benchapp.values import row_values  # noqa: E402
from benchdb import delete_queue  # noqa: E402
from request_path import BLOCK, Cell, Contender, X, measure_op  # noqa: E402
from worker import (  # noqa: E402
    BenchError,
    Worker,
    Writers,
    bench_environment,
    create_tables,
    group_pids,
    outbox_rows,
    run_and_report,
    scalar,
    setup_django,
    throwaway_database,
)

SPREADS = (1, 100)  # parents the children are spread over
UPDATES_PER_100 = 1.0  # target: UPDATEs of the hot parent per 100 increments
KINDS = {"counted": "auditq @counter_cache", "sync": "sync F() in the request"}
UPDATES_TABLE = "bench_parent_updates"


# --------------------------------------------------------------------------- set-up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="auditq counter caches vs a synchronous F().")
    parser.add_argument("--children", type=int, default=10_000, help="inserts per scenario")
    parser.add_argument("--ops", type=int, default=2000, help="timed request-path ops (x100)")
    parser.add_argument("--warmup", type=int, default=3, help="request-path warm-up blocks")
    parser.add_argument("--writers", type=int, default=2, help="processes inserting children")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="longest wait for the counters to settle"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    # Internal: run as one writer process (see writer()).
    parser.add_argument("--writer", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=tuple(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--parents", default="", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.children, args.ops, args.warmup, args.timeout = 2000, 2 * BLOCK, 1, 60.0
    if args.ops < BLOCK or args.ops % BLOCK:
        parser.error(f"--ops must be a positive multiple of {BLOCK}")
    # worker.Worker's options: one process per `celery worker` (relay thread and tasks).
    args.pool, args.concurrency = "solo", 1
    return args


def install_triggers() -> None:
    """One side-table row per ``UPDATE`` statement on a parent table, with its keys."""
    from benchapp.models import CounterParent, SyncParent
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {UPDATES_TABLE} (id bigserial PRIMARY KEY, tbl text, keys bigint[])"
        )
        cursor.execute(
            f"""CREATE FUNCTION bench_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO {UPDATES_TABLE} (tbl, keys)
                    SELECT TG_TABLE_NAME, array_agg(id) FROM new_rows;
                    RETURN NULL;
                END $$"""
        )
        for model in (CounterParent, SyncParent):
            cursor.execute(
                f'CREATE TRIGGER bench_count_update AFTER UPDATE ON "{model._meta.db_table}" '
                "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                "EXECUTE FUNCTION bench_count_update()"
            )


def parent_model(kind: str) -> Any:
    from benchapp.models import CounterParent, SyncParent

    return CounterParent if kind == "counted" else SyncParent


def child_model(kind: str) -> Any:
    from benchapp.models import CountedChild, SyncChild

    return CountedChild if kind == "counted" else SyncChild


def sync_create(values: dict[str, Any]) -> None:
    """A child and its parent's count, in the request, in one transaction."""
    from benchapp.models import SyncChild, SyncParent
    from django.db import transaction
    from django.db.models import F

    with transaction.atomic():
        SyncChild.objects.create(**values)
        SyncParent.objects.filter(pk=values["parent_id"]).update(children=F("children") + 1)


def creator(kind: str) -> Any:
    if kind == "sync":
        return sync_create
    model = child_model(kind)
    return lambda values: model.objects.create(**values)


def values_for(count: int, offset: int, parents: Sequence[int]) -> list[dict[str, Any]]:
    """Child ``offset + i`` goes to ``parents[(offset + i) % len(parents)]``."""
    from benchapp.models import Owner

    owners = list(Owner.objects.values_list("pk", flat=True))
    return [
        {**row_values(i, owners), "parent_id": parents[i % len(parents)]}
        for i in range(offset, offset + count)
    ]


# --------------------------------------------------------------------------- writers


def writer(count: int, kind: str, parents: Sequence[int], offset: int) -> None:
    """One writer process: ``count`` creates, each its own transaction; figures as JSON."""
    setup_django()
    from django.db import connections

    create = creator(kind)
    values = values_for(count, offset, parents)
    start = time.time()
    for row in values:
        create(row)
    end = time.time()
    connections.close_all()
    print(json.dumps({"saves": count, "start": start, "end": end}), flush=True)


@dataclass
class ChildWriters(Writers):
    """``worker.Writers`` running this script's writer: ``kind`` children of ``parents``."""

    kind: str = "counted"
    parents: Sequence[int] = ()

    def start(self, processes: int, total: int, offset: int, pace: float, seconds: float) -> None:
        share = [total // processes + (i < total % processes) for i in range(processes)]
        parents = ",".join(map(str, self.parents))
        for i, count in enumerate(share):
            command = [sys.executable, __file__, "--writer", str(count), "--kind", self.kind]
            command += ["--parents", parents, "--offset", str(offset + sum(share[:i]))]
            self.procs.append(
                subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, text=True)
            )


# --------------------------------------------------------------------------- workers


class NamedWorker(Worker):
    """``worker.Worker`` with a node name of its own, so that several run side by side."""

    def __init__(
        self, args: argparse.Namespace, queue: str, env: dict[str, str], log: Path, n: int
    ) -> None:
        super().__init__(args, queue, env, log)
        self.hostname = f"auditq-counterbench-{os.getpid()}-{n}@{socket.gethostname()}"
        self.command[self.command.index("-n") + 1] = self.hostname

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker's processes so far (``/proc``)."""
        if self.proc is None:
            return 0.0
        ticks = 0
        for pid in group_pids(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- counters


def counters_off(kind: str, expected: dict[int, int]) -> int:
    """How many of the parents do not hold their expected count yet."""
    table = parent_model(kind)._meta.db_table
    return scalar(
        f'SELECT count(*) FROM "{table}" p JOIN unnest(%s::bigint[], %s::bigint[]) '
        "AS e(id, n) ON p.id = e.id WHERE p.children IS DISTINCT FROM e.n",
        [list(expected), list(expected.values())],
    )


def quiet() -> bool:
    """No outbox row and no counter delta left."""
    from auditq.models import CounterDelta

    return not outbox_rows() and not CounterDelta.objects.exists()


def pending() -> str:
    from auditq.models import CounterDelta

    return f"{outbox_rows()} outbox rows and {CounterDelta.objects.count()} deltas pending"


def check_exact(kind: str, expected: dict[int, int]) -> None:
    """Every parent's counter == its share == ``count(*)`` of its children; or fail."""
    parent, child = parent_model(kind)._meta.db_table, child_model(kind)._meta.db_table
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT p.id, p.children, (SELECT count(*) FROM "{child}" c WHERE c.parent_id = p.id)'
            f' FROM "{parent}" p WHERE p.id = ANY(%s)',
            [list(expected)],
        )
        rows = cursor.fetchall()
    wrong = [(pk, stored, true) for pk, stored, true in rows if not stored == true == expected[pk]]
    if wrong or len(rows) != len(expected):
        shown = ", ".join(f"parent {pk}: {s} stored, {t} children" for pk, s, t in wrong[:5])
        raise BenchError(
            f"{KINDS[kind]}: {len(wrong)} of {len(expected)} counters wrong ({shown}); {pending()}"
        )


def wait_settled(
    kind: str, expected: dict[int, int], writers: ChildWriters, timeout: float
) -> float:
    """Poll the counters every 10 ms while the writers run and after; return when
    (``time.time()``) they all held their share (possible only after the last commit)."""
    deadline = None
    while True:
        if counters_off(kind, expected) == 0:
            return time.time()
        codes = [proc.poll() for proc in writers.procs]
        if any(codes):
            raise BenchError(f"a writer process failed (exit {max(filter(None, codes))})")
        if deadline is None and None not in codes:
            deadline = time.monotonic() + timeout
        if deadline is not None and time.monotonic() > deadline:
            off = counters_off(kind, expected)
            raise BenchError(
                f"{KINDS[kind]}: {off} of {len(expected)} counters still off {timeout:.0f} s "
                f"after the last insert; {pending()}"
            )
        time.sleep(0.01)


def wait_quiet(timeout: float, delay: float) -> None:
    """Until nothing is pending, then two flush delays more (a late flush would show)."""
    deadline = time.monotonic() + timeout
    while not quiet():
        if time.monotonic() > deadline:
            raise BenchError(f"not quiet {timeout:.0f} s after the counters settled: {pending()}")
        time.sleep(0.05)
    time.sleep(2 * delay + 0.5)


def update_figures(kind: str, after: int) -> tuple[int, int]:
    """``UPDATE`` statements on ``kind``'s parent table since side-table row ``after``,
    and the most statements that touched any one parent row."""
    table = parent_model(kind)._meta.db_table
    where = f"id > {int(after)} AND tbl = '{table}'"
    statements = scalar(f"SELECT count(*) FROM {UPDATES_TABLE} WHERE {where}")
    most = scalar(
        f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM {UPDATES_TABLE}, "
        f"unnest(keys) AS k WHERE {where} GROUP BY k) AS per_parent"
    )
    return statements, most


def scenario(
    args: argparse.Namespace,
    kind: str,
    spread: int,
    env: dict[str, str],
    offset: int,
    workers: Sequence[NamedWorker],
) -> dict[str, Any]:
    """``--children`` creates of ``kind`` over ``spread`` new parents; its figures."""
    from auditq import conf

    delay = conf.get().COUNTER_DELAY_SECONDS
    model = parent_model(kind)
    parents = [model.objects.create(name=f"{kind} {spread}.{i}").pk for i in range(spread)]
    expected = {
        pk: args.children // spread + (i < args.children % spread) for i, pk in enumerate(parents)
    }
    print(f"== {KINDS[kind]}: {args.children:,} inserts over {spread} parent(s)", flush=True)
    mark = scalar(f"SELECT coalesce(max(id), 0) FROM {UPDATES_TABLE}")
    cpu = sum(worker.cpu_seconds() for worker in workers)
    writers = ChildWriters(env, kind=kind, parents=parents)
    try:
        writers.start(args.writers, args.children, offset, 0.0, 0.0)
        settled = wait_settled(kind, expected, writers, args.timeout)
        written = writers.wait()
    finally:
        writers.kill()
    if written["saves"] != args.children:
        raise BenchError(f"{KINDS[kind]}: {written['saves']} inserts made, not {args.children}")
    wait_quiet(args.timeout, delay)
    check_exact(kind, expected)
    statements, most = update_figures(kind, mark)
    cpu = sum(worker.cpu_seconds() for worker in workers) - cpu
    result = {
        "kind": kind,
        "parents": spread,
        "children": args.children,
        "writers": args.writers,
        "update_statements": statements,
        "updates_max_per_parent": most,
        "increments_per_parent_max": max(expected.values()),
        "insert_us_per_writer": (written["end"] - written["start"])
        * 1e6
        * args.writers
        / args.children,
        "inserts_per_s": written["rate"],
        "settled_after_last_commit_ms": max(0.0, settled - written["end"]) * 1000,
        "workers_cpu_s": cpu,
        "exact": True,
    }
    print(
        f"   {statements:,} UPDATE statements (at most {most:,} on one parent), settled "
        f"{result['settled_after_last_commit_ms']:,.0f} ms after the last commit; exact",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------- request path


def request_path(args: argparse.Namespace) -> dict[str, Any]:
    """plain, counter cache and sync F() creates in turns of blocks (no worker running)."""
    from benchapp.models import CounterParent, PlainChild, SyncParent

    n = args.ops + (args.warmup + 1) * BLOCK
    counted = CounterParent.objects.create(name="request path").pk
    plain = CounterParent.objects.create(name="request path, plain").pk
    synced = SyncParent.objects.create(name="request path").pk
    players = [
        Contender("plain", PlainChild, None),
        Contender("counter cache", child_model("counted"), None),
        Contender("sync F()", child_model("sync"), None),
    ]
    fns = {
        "plain": lambda values: PlainChild.objects.create(**values),
        "counter cache": creator("counted"),
        "sync F()": sync_create,
    }
    parents = {"plain": plain, "counter cache": counted, "sync F()": synced}
    items = {name: values_for(n, 0, [parents[name]]) for name in fns}
    print(f"== request path: {', '.join(fns)}; {args.ops:,} timed creates each", flush=True)
    cells = measure_op("create", "1/txn", players, fns, items, args.warmup)
    if outbox_rows() < n:
        raise BenchError(f"counter cache: {outbox_rows()} outbox rows for {n} creates")
    return {
        "created": n,
        "parent": counted,
        "cells": {name: cell_figures(cell) for name, cell in cells.items()},
    }


def cell_figures(cell: Cell) -> dict[str, Any]:
    return {
        "median_us": cell.median,
        "p10_us": cell.quantile(0.1),
        "p90_us": cell.quantile(0.9),
        "blocks": len(cell.blocks),
        "tail_us": cell.tail_us,
        "queries_per_op": cell.queries_per_op,
        "one_op": cell.one_op,
    }


def drain_request_path(rp: dict[str, Any], timeout: float) -> None:
    """With the workers up, the request path's counted parent must settle exactly."""
    started = time.monotonic()
    expected = {rp["parent"]: rp["created"]}
    while counters_off("counted", expected):
        if time.monotonic() - started > timeout:
            raise BenchError(f"the request path's backlog did not settle: {pending()}")
        time.sleep(0.05)
    check_exact("counted", expected)
    print(f"   the request path's {rp['created']:,} increments applied, exact", flush=True)


# --------------------------------------------------------------------------- report


def report(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    rp = result["request_path"]["cells"]
    plain = rp["plain"]["median_us"]
    lines = [
        "",
        f"Request path, PostgreSQL, autocommit creates: median per op over "
        f"{rp['plain']['blocks']} blocks of {BLOCK}, {X}plain, (p10-p90 µs), queries/op",
    ]
    for name, cell in rp.items():
        lines.append(
            f"  {name:<14} {cell['median_us']:>6,.0f} µs {cell['median_us'] / plain:>5.2f}{X} "
            f"({cell['p10_us']:.0f}-{cell['p90_us']:.0f})  {cell['queries_per_op']:g}"
            f"  [{', '.join(cell['one_op'])}]"
        )
    counted, synced = rp["counter cache"]["median_us"], rp["sync F()"]["median_us"]
    lines.append(f"  counter cache / sync F(): {counted / synced:.2f}{X}")
    lines += [
        "",
        f"{args.children:,} inserts, each its own transaction, by {args.writers} writer "
        f"processes; {args.workers} celery workers (-P solo)",
        f"  {'contender':<24} {'parents':>7} {'UPDATEs':>8} {'/100 incr.':>10} "
        f"{'max/parent':>10} {'insert µs':>9} {'inserts/s':>9} {'settled after':>13} "
        f"{'worker CPU':>10}  exact",
    ]
    for s in result["scenarios"]:
        per_100 = s["updates_max_per_parent"] * 100 / s["increments_per_parent_max"]
        settled = f"{s['settled_after_last_commit_ms']:,.0f} ms"
        lines.append(
            f"  {KINDS[s['kind']]:<24} {s['parents']:>7} {s['update_statements']:>8,} "
            f"{per_100:>10.2f} {s['updates_max_per_parent']:>10,} "
            f"{s['insert_us_per_writer']:>9,.0f} {s['inserts_per_s']:>9,.0f} {settled:>13} "
            f"{s['workers_cpu_s']:>8.1f} s  "
            f"{'yes' if s['exact'] else 'NO'}"
        )
    lines.append(
        "  /100 incr. = UPDATEs of the most updated parent per 100 of its increments; "
        "insert µs = per insert, per writer;\n  worker CPU = user + system of the celery "
        "worker processes during the scenario (PostgreSQL's not included)"
    )
    hot = next(s for s in result["scenarios"] if s["kind"] == "counted" and s["parents"] == 1)
    limit = args.children * UPDATES_PER_100 / 100
    mark = "PASS" if hot["updates_max_per_parent"] <= limit else "FAIL"
    writing = hot["children"] / hot["inserts_per_s"]
    bound = 1 / result["counter_delay_s"]
    lines += [
        f"  hot parent: {hot['updates_max_per_parent'] / writing:.1f} UPDATEs/s over "
        f"{writing:.1f} s of inserts (at most one UPDATE of a parent per "
        f"COUNTER_DELAY_SECONDS={result['counter_delay_s']:g}: {bound:g}/s)",
        "",
        "Targets (auditq):",
        f"  <= {limit:,.0f} UPDATEs of the hot parent per {args.children:,} increments: {mark} "
        f"({hot['updates_max_per_parent']:,})",
        "  exact result: PASS (every counter equal to count(*) of its children)",
    ]
    return lines


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    queue = f"auditq-counterbench-{os.getpid()}"
    with (
        throwaway_database() as db_name,
        tempfile.TemporaryDirectory(prefix="auditq-counterbench-") as tmp,
    ):
        env = bench_environment(db_name, queue, 0.0)
        os.environ.update(env)
        app = setup_django()
        create_tables()
        workers = [
            NamedWorker(args, queue, env, Path(tmp) / f"worker{n}.log", n)
            for n in range(args.workers)
        ]
        try:
            from auditq import conf

            result: dict[str, Any] = {"counter_delay_s": conf.get().COUNTER_DELAY_SECONDS}
            result["request_path"] = request_path(args)
            install_triggers()
            print(f"== {args.workers} workers: {' '.join(workers[0].command)}", flush=True)
            for worker in workers:
                worker.start(app)
            drain_request_path(result["request_path"], args.timeout)
            result["scenarios"] = []
            offset = 0
            for spread in SPREADS:
                for kind in KINDS:
                    result["scenarios"].append(scenario(args, kind, spread, env, offset, workers))
                    offset += args.children
            result["memory"] = [worker.memory() for worker in workers]
            return result
        except BenchError as exc:
            tails = "\n".join(f"--- worker {w.hostname} (tail) ---\n{w.tail()}" for w in workers)
            raise BenchError(f"{exc}\n{tails}") from exc
        finally:
            for worker in workers:
                worker.stop()
            delete_queue(app, queue)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.writer is not None:
        parents = [int(pk) for pk in args.parents.split(",")]
        writer(args.writer, args.kind, parents, args.offset)
        return 0
    return run_and_report("counter-cache bench", args, run, report)


if __name__ == "__main__":
    sys.exit(main())
