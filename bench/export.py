#!/usr/bin/env python
"""Exports of a big trail: rows/s and peak memory, to show memory does not grow with rows.

Usage::

    .venv/bin/python bench/export.py [--rows 10000000] [--share 0.1] [--keep] [--json FILE]

Creates a throwaway PostgreSQL database ``auditq_exportbench_<pid>`` on the server of
``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``), migrates, and fills
``auditq_auditentry`` with ``--rows`` entries with ``bench/admin_changelist.py``'s
``fill()`` (one ``INSERT ... SELECT ... FROM generate_series``; times spread over the last
365 days). Then each export runs in a fresh process of its own, so that its peak RSS
is its own:

- ``manage.py auditq_export`` in JSON Lines and in CSV, to ``/dev/null`` (what is
  measured is reading and encoding, not the disk);
- the admin's background export (the ``auditq.export`` operation: its begin, write
  chunks and finish steps, run in that process), JSON Lines to a file in the default
  storage (a temporary folder, deleted after each run);

each over the whole trail and over its newest ``--share`` (by time: about that share of
the rows), so that the peak RSS at both sizes is side by side: the RSS once Django is set
up, and the peak RSS during the export (``VmHWM``, reset when the export starts). The
database is dropped at the end unless ``--keep``.
Exit status: 0 when it measured, 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from admin_changelist import configure, fill
from benchdb import postgres_settings, postgres_url, server_execute

HERE = Path(__file__).resolve().parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time exports of a big trail (bench/README.md).")
    parser.add_argument("--rows", type=int, default=10_000_000, help="entries to create")
    parser.add_argument(
        "--share", type=float, default=0.1, help="the smaller export: this share of the rows"
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    # One export in this process (the parent runs each so).
    parser.add_argument("--child", metavar="DATABASE", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["command", "background"], help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=["jsonl", "csv"], help=argparse.SUPPRESS)
    parser.add_argument("--since", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    if not 0 < args.share < 1:
        parser.error("--share must be between 0 and 1")
    return args


def status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak() -> None:
    """Make the peak RSS start again from now (Linux: ``clear_refs`` 5), so that the
    export's peak is not hidden by a higher one during Django's start-up."""
    Path("/proc/self/clear_refs").write_text("5")


def child(args: argparse.Namespace) -> int:
    """Run one export and print its figures as one JSON line."""
    configure(postgres_settings(postgres_url(), args.child))
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    media = tempfile.mkdtemp(prefix="auditq-exportbench-")
    settings.MEDIA_ROOT = media
    reset_peak()
    before = status_mb("VmRSS")
    start = time.perf_counter()
    if args.mode == "command":
        err = io.StringIO()
        options = ["--format", args.format, "--output", "/dev/null"]
        if args.since:
            options += ["--since", args.since]
        call_command("auditq_export", *options, stderr=err)
        rows = int(err.getvalue().split()[1])
    else:
        from urllib.parse import urlencode

        from auditq.admin import exports
        from auditq.delivery import broker
        from auditq.operations import executor

        # No broker: each step runs here, one after the other, as a worker would run them.
        broker.send = lambda *args, **kwargs: None
        query = urlencode({"occurred_at__gte": args.since}) if args.since else ""
        admin = get_user_model().objects.get(username="admin")
        run = exports.EXPORT.start(
            format=args.format,
            query=query,
            site="admin",
            user_id=admin.pk,
            file=f"auditq/exports/bench/audit-entries.{args.format}",
            base_url="http://bench",
        )
        while executor.run(run.pk, "default") == "pending":
            pass
        run.refresh_from_db()
        if run.status != "succeeded":
            print(f"BENCH FAILED: the export run is {run.status}: {run.error}", file=sys.stderr)
            return 2
        rows = run.values["written"]
        steps = run.steps.count()
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    figures = {"rows": rows, "seconds": seconds, "rss_before_mb": before, "rss_peak_mb": peak}
    if args.mode == "background":
        figures["steps"] = steps
        figures["file_mb"] = sum(p.stat().st_size for p in Path(media).rglob("*") if p.is_file())
        figures["file_mb"] /= 2**20
    shutil.rmtree(media, ignore_errors=True)
    print(json.dumps(figures))
    return 0


def run_child(database: str, mode: str, format: str, since: str | None) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "export.py"), "--child", database]
    command += ["--mode", mode, "--format", format]
    if since:
        command += ["--since", since]
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {format} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    url = postgres_url()
    name = f"auditq_exportbench_{os.getpid()}"
    configure(postgres_settings(url, name))
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, connections

    created = False
    results: list[dict[str, Any]] = []
    try:
        server_execute(url, f'CREATE DATABASE "{name}"')
        created = True
        print(f"database {name} created; migrating ...", flush=True)
        call_command("migrate", verbosity=0, interactive=False)
        get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
        print(f"filling {args.rows:,} entries ...", flush=True)
        data = fill(args.rows)
        print(f"filled in {data.fill_seconds:.0f} s ({data.table_mb:,.0f} MB)", flush=True)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT percentile_disc(%s) WITHIN GROUP (ORDER BY occurred_at) "
                "FROM auditq_auditentry",
                [1 - args.share],
            )
            since = cursor.fetchone()[0].isoformat()
        connections.close_all()
        cases = [
            ("command", "jsonl", since),
            ("command", "jsonl", None),
            ("command", "csv", since),
            ("command", "csv", None),
            ("background", "jsonl", since),
            ("background", "jsonl", None),
        ]
        print(
            f"{'export':<22} {'rows':>11} {'s':>8} {'rows/s':>9} "
            f"{'RSS before':>11} {'RSS peak':>9} {'growth':>7}",
            flush=True,
        )
        for mode, format, start in cases:
            found = run_child(name, mode, format, start)
            found.update(mode=mode, format=format, since=start)
            results.append(found)
            growth = found["rss_peak_mb"] - found["rss_before_mb"]
            print(
                f"{mode + ' ' + format:<22} {found['rows']:>11,} {found['seconds']:>8.1f} "
                f"{found['rows'] / found['seconds']:>9,.0f} {found['rss_before_mb']:>8.1f} MB "
                f"{found['rss_peak_mb']:>6.1f} MB {growth:>4.1f} MB"
                + (f"  ({found['steps']} steps)" if "steps" in found else ""),
                flush=True,
            )
    except Exception:
        traceback.print_exc()
        print("BENCH FAILED: see the traceback above")
        return 2
    finally:
        connections.close_all()
        if created and not args.keep:
            server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"database {name} dropped")
        elif created:
            print(f"database {name} kept (--keep)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": args.rows, "when": datetime.datetime.now().isoformat(), "runs": results},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
