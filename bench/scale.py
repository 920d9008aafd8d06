#!/usr/bin/env python
"""The trail at scale: the admin and a month's prune on N entries (default 50,000,000),
partitioned by month (``AUDITQ["PARTITION"] = "month"``) and not, side by side.

Usage::

    .venv/bin/python bench/scale.py [--entries 50000000] [--months 24]
                                    [--layouts partitioned,plain] [--repeat 7] [--warmup 2]
                                    [--prune-budget 120] [--keep] [--json FILE]
                                    [--reuse DATABASE --layouts LAYOUT]

For each layout, one after the other (so that only one copy of the data is on disk), a
throwaway database ``auditq_scalebench_<pid>_<layout>`` on ``DATABASE_URL``'s server is
migrated (for ``partitioned``: the empty table converted with
``auditq.partitions.convert`` and a partition made per month of the data), and filled
with ``bench/admin_changelist.py``'s ``INSERT … SELECT … generate_series`` (its
distribution, its 20 content types and 500 users), not through Python: in time-ordered
chunks of 500,000 rows over ``--months`` months up to now, with the table's constraints
and indexes dropped first and built again after the fill (as a bulk load is done; the
same indexes, the pg_trgm ones included), then ``VACUUM (ANALYZE)``.

Then it times, with Django's test client as the superuser (``admin_changelist.measure``:
warm-up rounds, then ``--repeat`` rounds of every page once): the changelist, a hot and a
cold per-object trail, a filter by model, and three searches (an object key, part of a
repr, an actor's name) as the admin makes them on a trail this big (the last
``ADMIN_SEARCH_DAYS`` days), then each over all time (its "search all time" link, shown
against the target but not held to it). Last, ``auditq.retention.prune`` of the oldest
month (the cutoff is the start of the data's second month): on the partitioned table one
partition is detached and dropped; on the plain table rows are deleted in batches of 1,000, for at
most ``--prune-budget`` seconds, and the time for the whole month is extrapolated from
the rate. Targets: every admin page < 100 ms partitioned, the month pruned < 1 s.

``--reuse DATABASE`` times the pages again on a database that a ``--keep`` run filled,
with ``--layouts`` naming its one layout: no fill and no prune.

Exit 0 when it measured (targets met or not), 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from admin_changelist import (
    CHANGELIST,
    FILL_SQL,
    MODEL_NAMES,
    N_OBJECTS,
    N_USERS,
    Page,
    configure,
    environment,
    first_line,
    fmt,
    measure,
    trail_url,
)
from benchdb import postgres_settings, postgres_url, server_execute

TARGET_MS = 100.0
PRUNE_TARGET_S = 1.0
CHUNK = 500_000
LAYOUTS = ("partitioned", "plain")
SPREAD = "now() - random() * interval '365 days'"
"""admin_changelist's spread of ``occurred_at``, replaced by each chunk's window."""
WINDOW = "%(low)s::timestamptz + random() * %(span)s::interval"


class BenchError(Exception):
    """The set-up failed."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000_000)
    parser.add_argument("--months", type=int, default=24, help="months the entries span")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="partitioned,plain")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--prune-budget", type=float, default=120.0, help="seconds of row-by-row prune"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="time the pages again on a database a --keep run filled (one layout, no prune)",
    )
    args = parser.parse_args(argv)
    args.layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    if not set(args.layouts) <= set(LAYOUTS) or not args.layouts:
        parser.error(f"--layouts takes {', '.join(LAYOUTS)}")
    if args.reuse and len(args.layouts) != 1:
        parser.error("--reuse takes the one layout of its database: --layouts partitioned")
    if args.entries < 10_000 or args.months < 3:
        parser.error("--entries must be at least 10,000 and --months at least 3")
    return args


@dataclass
class Run:
    layout: str
    entries: int = 0
    fill_s: float = 0.0
    index_s: float = 0.0
    analyze_s: float = 0.0
    table_mb: float = 0.0
    indexes_mb: float = 0.0
    partitions: int = 0
    pages: list[Page] = field(default_factory=list)
    prune_rows: int = 0
    prune_s: float = 0.0
    prune_month_rows: int = 0
    prune_complete: bool = True
    error: str | None = None

    @property
    def prune_month_s(self) -> float:
        """The whole month's prune: measured, or extrapolated from the rate."""
        if self.prune_complete or not self.prune_rows:
            return self.prune_s
        return self.prune_s * self.prune_month_rows / self.prune_rows


# --------------------------------------------------------------------------- fill


def sql(statement: str, params: Any = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def strip_table() -> list[str]:
    """Drop the entries' constraints and indexes; return the statements that make them
    again (a partitioned parent's: each builds on every partition)."""
    again = []
    for name, definition in sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'auditq_auditentry'::regclass AND contype IN ('p', 'u', 'f') "
        "ORDER BY contype DESC"
    ):
        sql(f'ALTER TABLE auditq_auditentry DROP CONSTRAINT "{name}"')
        again.append(f'ALTER TABLE auditq_auditentry ADD CONSTRAINT "{name}" {definition}')
    for name, definition in sql(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'auditq_auditentry'::regclass"
    ):
        sql(f'DROP INDEX "{name}"')
        again.append(definition.replace(" ON ONLY ", " ON "))
    return again


def fill(run: Run, rows: int, months: int) -> dict[str, Any]:
    """Fill the table; return the pages' subjects."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    from auditq import partitions

    user_model = get_user_model()
    cts = ContentType.objects.bulk_create(
        [ContentType(app_label="adminbench", model=name) for name in MODEL_NAMES]
    )
    cts += [ContentType.objects.get_by_natural_key("auth", name) for name in ("user", "group")]
    users = user_model.objects.bulk_create(
        [
            user_model(username=f"user{i:03d}", email=f"user{i:03d}@example.com", password="!")
            for i in range(1, N_USERS + 1)
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=30.44 * months)
    if run.layout == "partitioned":
        partitions.convert("month", ahead=1)
        partitions.create("month", start, now)
        run.partitions = len(partitions.listing())
    again = strip_table()
    chunks = max(1, -(-rows // CHUNK))
    span = (now - start) / chunks
    statement = FILL_SQL.replace(SPREAD, WINDOW)
    assert statement != FILL_SQL, "admin_changelist's FILL_SQL changed its time spread"
    began = time.perf_counter()
    sql("SET work_mem = '256MB'")
    for chunk in range(chunks):
        size = rows // chunks + (1 if chunk < rows % chunks else 0)
        sql(
            statement,
            {
                "cts": [ct.pk for ct in cts],
                "models": [ct.model for ct in cts],
                "n_cts": len(cts),
                "users": [u.pk for u in users],
                "n_users": len(users),
                "n_objects": N_OBJECTS,
                "rows": size,
                "low": start + span * chunk,
                "span": span,
            },
        )
        if chunk % 10 == 9:
            done = rows * (chunk + 1) // chunks
            print(f"  {done:,} rows in {time.perf_counter() - began:.0f} s", flush=True)
    run.fill_s = time.perf_counter() - began
    began = time.perf_counter()
    sql("SET maintenance_work_mem = '1GB'")
    for statement in again:
        sql(statement)
    run.index_s = time.perf_counter() - began
    began = time.perf_counter()
    sql("VACUUM (ANALYZE) auditq_auditentry")
    if run.layout == "partitioned":  # the parent's own statistics (autovacuum skips it)
        sql("ANALYZE auditq_auditentry")
    run.analyze_s = time.perf_counter() - began
    settle()
    [(table, indexes)] = sql(
        "SELECT sum(pg_table_size(relid)), sum(pg_indexes_size(relid)) FROM "
        "pg_partition_tree('auditq_auditentry') WHERE isleaf"
        if run.layout == "partitioned"
        else "SELECT pg_table_size('auditq_auditentry'), pg_indexes_size('auditq_auditentry')"
    )
    run.table_mb, run.indexes_mb = table / 2**20, indexes / 2**20
    run.entries = rows
    return {**subjects_of(cts), "start": start}


def settle() -> None:
    """Write the bulk load's dirty pages out now (``CHECKPOINT``), as a settled server
    would have: otherwise the checkpoint that follows a load of gigabytes runs under the
    pages timed and the prune, and slows them (a prune of 1.2 s instead of 0.4 s)."""
    try:
        sql("CHECKPOINT")
    except Exception as exc:  # not a superuser (nor pg_checkpoint): measured unsettled
        print(f"  CHECKPOINT refused ({first_line(exc)}): measuring without it", flush=True)


def subjects_of(cts: list[Any]) -> dict[str, Any]:
    """The pages' subjects in the filled data (``cts``: its content types, in fill order)."""
    # Object k's content type is cts[1 + k % 20] (1-based): object 1 is the hottest.
    hot_ct = cts[1 % len(cts)].pk
    cold_key = str(N_OBJECTS * 9 // 10)
    cold_ct = cts[int(cold_key) % len(cts)].pk
    [(cold_repr,)] = sql(
        "SELECT object_repr FROM auditq_auditentry WHERE content_type_id = %s "
        "AND object_pk = %s LIMIT 1",
        [cold_ct, cold_key],
    ) or [("Order #90000",)]
    return {
        "hot": (hot_ct, "1"),
        "cold": (cold_ct, cold_key),
        "model": cts[5].pk,
        "key": "200",
        "repr": cold_repr,
        "actor": f"user{N_USERS // 2:03d}",
        "year": datetime.date.today().year - 1,  # whole in the data (the last 24 months)
    }


def pages_for(subjects: dict[str, Any]) -> list[Page]:
    def page(key: str, label: str, url: str, targeted: bool = True) -> Page:
        return Page(key, label, url, targeted, False, target_ms=TARGET_MS)

    searches = {
        "key": ("an object key", subjects["key"]),
        "repr": (f"part of a repr ({subjects['repr']})", subjects["repr"]),
        "actor": ("an actor's name", subjects["actor"]),
    }

    return [
        page("changelist", "changelist", CHANGELIST),
        page("trail_hot", "per-object trail, the hottest object", trail_url(*subjects["hot"])),
        page("trail_cold", "per-object trail, a cold object", trail_url(*subjects["cold"])),
        page(
            "model",
            "filter by model",
            f"{CHANGELIST}?{urlencode({'content_type__id__exact': subjects['model']})}",
        ),
        # The date hierarchy's drill-down: a year's months, then a month's days.
        page(
            "year",
            "date hierarchy, a year",
            f"{CHANGELIST}?{urlencode({'occurred_at__year': subjects['year']})}",
        ),
        page(
            "month",
            "date hierarchy, a month",
            f"{CHANGELIST}?"
            + urlencode({"occurred_at__year": subjects["year"], "occurred_at__month": 6}),
        ),
        # As the admin searches a big trail: the last ADMIN_SEARCH_DAYS days (the target).
        *(
            page(f"search_{name}", f"search, {label}", f"{CHANGELIST}?{urlencode({'q': term})}")
            for name, (label, term) in searches.items()
        ),
        # Its "search all time" link: shown against the target, not held to it.
        *(
            page(
                f"search_{name}_all",
                f"search all time, {label}",
                f"{CHANGELIST}?{urlencode({'q': term, 'searched': 'all'})}",
                targeted=False,
            )
            for name, (label, term) in searches.items()
        ),
    ]


class Budget(Exception):
    """The row-by-row prune ran out of its time budget."""


def prune_month(run: Run, start: datetime.datetime, budget: float) -> None:
    """Prune everything before the data's second month."""
    from auditq import partitions, retention

    cutoff = partitions.next_start("month", partitions.period_start("month", start))
    [(run.prune_month_rows,)] = sql(
        "SELECT count(*) FROM auditq_auditentry WHERE occurred_at < %s", [cutoff]
    )
    deleted = [0]
    began = time.perf_counter()

    def progress(count: int) -> None:
        deleted[0] += count
        if time.perf_counter() - began > budget:
            raise Budget

    try:
        retention.prune(cutoff, batch_size=1000, progress=progress)
    except Budget:
        run.prune_complete = False
    run.prune_s = time.perf_counter() - began
    run.prune_rows = deleted[0]


def configured(layout: str) -> Any:
    """The settings a site with this layout runs with (``AUDITQ["PARTITION"]``)."""
    from django.conf import settings
    from django.test.utils import override_settings

    if layout != "partitioned":
        return contextlib.nullcontext()
    return override_settings(AUDITQ={**getattr(settings, "AUDITQ", {}), "PARTITION": "month"})


def measure_again(run: Run, args: argparse.Namespace) -> Run:
    """Time the pages on a database an earlier ``--keep`` run filled (no fill, no prune)."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    try:
        cts = list(ContentType.objects.filter(app_label="adminbench").order_by("pk"))
        cts += [ContentType.objects.get_by_natural_key("auth", name) for name in ("user", "group")]
        [(run.entries,)] = sql("SELECT count(*) FROM auditq_auditentry")
        print(f"[{run.layout}] {args.reuse}: {run.entries:,} entries; measuring ...", flush=True)
        run.pages = pages_for(subjects_of(cts))
        with configured(run.layout):
            superuser = get_user_model().objects.get(username="admin")
            measure(run.pages, args.repeat, args.warmup, superuser)
    except Exception as exc:
        traceback.print_exc()
        run.error = first_line(exc)
    return run


def one_layout(layout: str, args: argparse.Namespace, url: str) -> Run:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    run = Run(layout)
    name = args.reuse or f"auditq_scalebench_{os.getpid()}_{layout}"
    connections["default"].settings_dict["NAME"] = name
    connections.close_all()
    created = False
    if args.reuse:
        return measure_again(run, args)
    try:
        server_execute(url, f'CREATE DATABASE "{name}"')
        created = True
        call_command("migrate", verbosity=0, interactive=False)
        superuser = get_user_model().objects.create_superuser("admin", "a@example.com", "admin")
        free = shutil.disk_usage("/").free / 2**30
        print(f"[{layout}] {name}: filling {args.entries:,} entries ({free:.0f} GB free)")
        subjects = fill(run, args.entries, args.months)
        print(
            f"[{layout}] filled in {run.fill_s:.0f} s, indexes {run.index_s:.0f} s, "
            f"VACUUM ANALYZE {run.analyze_s:.0f} s; table {run.table_mb:,.0f} MB, indexes "
            f"{run.indexes_mb:,.0f} MB; measuring ...",
            flush=True,
        )
        run.pages = pages_for(subjects)
        with configured(layout):
            measure(run.pages, args.repeat, args.warmup, superuser)
        print(f"[{layout}] pruning the oldest month ...", flush=True)
        prune_month(run, subjects["start"], args.prune_budget)
    except Exception as exc:
        traceback.print_exc()
        run.error = first_line(exc)
    finally:
        connections.close_all()
        if created and not args.keep:
            server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return run


def report(runs: list[Run], env: dict[str, str], args: argparse.Namespace) -> None:
    print()
    print("== environment")
    for key, value in env.items():
        print(f"{key}: {value}")
    print()
    head = " | ".join(f"{r.layout} median (p90) ms" for r in runs)
    print(f"| {args.entries:,} entries, {args.months} months | {head} |")
    print("| --- |" + " ---: |" * len(runs))
    for i, page in enumerate(runs[0].pages):
        cells = []
        for run in runs:
            found = run.pages[i] if i < len(run.pages) else None
            if found is None or found.error:
                cells.append(f"error: {found.error if found else run.error}")
            else:
                cells.append(f"{fmt(found.median)} ({fmt(found.p90)})")
        print(f"| {page.label} | {' | '.join(cells)} |")
    cells = []
    for run in runs if not args.reuse else ():
        measured = f"{run.prune_rows:,} rows in {run.prune_s:.2f} s"
        if run.prune_complete:
            cells.append(f"{run.prune_s:.2f} s ({measured})")
        else:
            cells.append(
                f"~{run.prune_month_s:,.0f} s extrapolated ({measured}, stopped at the budget; "
                f"the month holds {run.prune_month_rows:,})"
            )
    if cells:
        print(f"| prune of the oldest month | {' | '.join(cells)} |")
    print()
    for run in runs:
        extra = f", {run.partitions} partitions" if run.partitions else ""
        print(
            f"{run.layout}: fill {run.fill_s:.0f} s, indexes {run.index_s:.0f} s, VACUUM "
            f"ANALYZE {run.analyze_s:.0f} s; table {run.table_mb:,.0f} MB, indexes "
            f"{run.indexes_mb:,.0f} MB{extra}" + (f"; ERROR {run.error}" if run.error else "")
        )
    partitioned = next((r for r in runs if r.layout == "partitioned"), None)
    if partitioned and partitioned.pages:
        slow = [p.label for p in partitioned.pages if p.targeted and p.met is not True]
        pruned = partitioned.prune_s < PRUNE_TARGET_S
        print(
            "targets (partitioned): pages < 100 ms: "
            + ("met" if not slow else f"NOT MET ({'; '.join(slow)})")
            + ("" if args.reuse else "; month pruned < 1 s: " + ("met" if pruned else "NOT MET"))
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "environment": env,
                    "entries": args.entries,
                    "runs": [
                        {
                            **{k: v for k, v in vars(r).items() if k != "pages"},
                            "pages": [
                                {
                                    "key": p.key,
                                    "times_ms": p.times_ms,
                                    "median_ms": p.median,
                                    "p90_ms": p.p90,
                                    "queries": p.queries,
                                    "slowest_ms": p.slowest_ms,
                                    "slowest_sql": p.slowest.short if p.slowest else None,
                                    "error": p.error,
                                }
                                for p in r.pages
                            ],
                        }
                        for r in runs
                    ],
                },
                fh,
                indent=2,
                default=str,
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = postgres_url()
    configure(postgres_settings(url, "postgres"))
    env = environment()
    runs: list[Run] = []
    for layout in args.layouts:
        runs.append(one_layout(layout, args, url))
        report(runs, env, args)  # so far: a long run shows each layout once measured
    if any(r.error for r in runs):
        print("BENCH FAILED: " + "; ".join(f"{r.layout}: {r.error}" for r in runs if r.error))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
