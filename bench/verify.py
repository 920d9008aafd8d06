#!/usr/bin/env python
"""How fast ``auditq_verify`` recomputes the hash chains (target: 1,000,000 entries a
minute or more), on a trail of ``--entries`` chained entries.

Usage::

    .venv/bin/python bench/verify.py [--entries 1000000] [--models 2] [--batch 10000]

Method. A throwaway PostgreSQL database is created next to ``DATABASE_URL`` (Django set
up with ``worker_settings``). The trail is filled through auditq's own recording path,
``auditq.chain.extend`` with the audit consumer's insert (one ``jsonb_to_recordset``
statement per batch): the hashes are computed in Python, in bulk, ``--batch`` rows per
transaction, spread over ``--models`` chains. Each row looks like a recorded update of
a ``benchapp`` row (six changed fields, an actor, an address, a request id, a context).
Then ``auditq.chain.verify.verify()`` (what ``auditq_verify`` runs) reads them all in
one snapshot through a server-side cursor and recomputes every hash; the script prints
its time and rate, and fails if a chain is not intact.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from worker import BENCH_DIR, bench_environment, run_and_report, setup_django, throwaway_database

TARGET_PER_MINUTE = 1_000_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="auditq_verify's speed.")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=2, choices=(1, 2))
    parser.add_argument("--batch", type=int, default=10_000, help="rows hashed per transaction")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    return parser.parse_args(argv)


def fill(entries: int, models: int, batch: int) -> dict[str, Any]:
    """Record ``entries`` chained entries through ``chain.extend``."""
    from benchapp.models import AuditqRow, PlainRow
    from django.contrib.contenttypes.models import ContentType
    from django.utils import timezone

    from auditq import chain
    from auditq.consumers import audit

    types = [ContentType.objects.get_for_model(m).pk for m in (AuditqRow, PlainRow)[:models]]
    start, now = time.perf_counter(), timezone.now()
    for first in range(0, entries, batch):
        rows = [
            {
                "event_id": uuid.uuid4(),
                "content_type_id": types[n % models],
                "object_pk": str(n),
                "object_repr": f"row {n}",
                "action": "update",
                "changes": {
                    "title": [f"title {n}", f"title {n + 1}"],
                    "count": [n, n + 1],
                    "amount": ["12.50", "13.75"],
                    "active": [True, False],
                    "ratio": [0.25, 0.5],
                    "note": [None, "checked"],
                },
                "actor_id": n % 50 + 1,
                "actor_repr": f"user{n % 50}",
                "remote_addr": "203.0.113.7",
                "request_id": f"req-{n}",
                "context": {"path": "/rows/", "command": None},
                "occurred_at": now,
            }
            for n in range(first, min(first + batch, entries))
        ]
        chain.extend(rows, "default", audit._insert)
        print(f"\r   filled {first + len(rows):,}", end="", flush=True)
    seconds = time.perf_counter() - start
    print(flush=True)
    return {
        "entries": entries,
        "chains": models,
        "fill_s": seconds,
        "fill_per_s": entries / seconds,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with throwaway_database() as db_name:
        os.environ.update(bench_environment(db_name, "auditq-bench-verify", 0.0))
        setup_django()
        from django.core.management import call_command
        from django.db import connection

        from auditq.chain import verify

        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        print(f"== filling {args.entries:,} chained entries", flush=True)
        filled = fill(args.entries, args.models, args.batch)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE auditq_auditentry")
        print("== verifying", flush=True)
        start = time.perf_counter()
        results = verify.verify()
        seconds = time.perf_counter() - start
        broken = [r.describe() for r in results if not r.intact]
        verified = sum(r.verified for r in results)
        if broken or verified != args.entries:
            from worker import BenchError

            raise BenchError(f"verified {verified} of {args.entries}: {broken}")
        return {
            **filled,
            "verified": verified,
            "verify_s": seconds,
            "verify_per_minute": verified / seconds * 60,
        }


def report(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    per_minute = result["verify_per_minute"]
    mark = "PASS" if per_minute >= TARGET_PER_MINUTE else "MISS"
    return [
        "",
        f"Filled {result['entries']:,} chained entries over {result['chains']} chains through "
        f"chain.extend in {result['fill_s']:.1f} s ({result['fill_per_s']:,.0f} entries/s, "
        f"batches of {args.batch:,})",
        f"Verified {result['verified']:,} entries in {result['verify_s']:.1f} s: "
        f"{per_minute:,.0f} entries/minute   target >= {TARGET_PER_MINUTE:,}: {mark}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report("verify bench", args, measure, report)


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR))
    sys.exit(main())
