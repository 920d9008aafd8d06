#!/usr/bin/env python
"""``auditq_partition`` on a live trail: how long its locks hold up the workers.

Usage::

    .venv/bin/python bench/convert.py [--entries 1000000] [--rate 200] [--batch-size 50000]

A throwaway database ``auditq_convertbench_<pid>`` on ``DATABASE_URL``'s server is
migrated and filled with ``bench/admin_changelist.py``'s ``--entries`` entries. A writer
thread then records entries as a worker does (``auditq.consumers.audit``'s batch insert,
one entry per transaction, ``--rate`` a second) while ``auditq.partitions.convert``
turns the table into one partitioned by month. Printed: the conversion's phases (the
batched copy, the SHARE locks that find how far each round may go, the swap's ACCESS
EXCLUSIVE lock), the writer's insert latencies during the conversion (median, p99, max),
and a check that every entry, filled or written meanwhile, is in the new table once.

Exit 0 when it measured, 2 when the set-up failed or an entry went missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import traceback
import uuid

from admin_changelist import configure, environment, fill
from benchdb import postgres_settings, postgres_url, server_execute


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=200.0, help="entries/s written meanwhile")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def writer(stop: threading.Event, rate: float, latencies: list[float], written: list) -> None:
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction
    from django.utils import timezone

    from auditq.consumers import audit

    content_type = ContentType.objects.get_by_natural_key("auth", "user").pk
    next_at = time.perf_counter()
    try:
        while not stop.is_set():
            event = uuid.uuid4()
            row = {
                "event_id": event,
                "content_type_id": content_type,
                "object_pk": "1",
                "object_repr": "written during the conversion",
                "action": "update",
                "changes": {"x": [1, 2]},
                "actor_id": None,
                "actor_repr": "",
                "remote_addr": None,
                "request_id": "",
                "context": {},
                "occurred_at": timezone.now(),
            }
            began = time.perf_counter()
            with transaction.atomic():
                audit._insert([row], "default")
            latencies.append((time.perf_counter() - began) * 1000)
            written.append(event)
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        connection.close()


def main() -> int:
    args = parse_args()
    url = postgres_url()
    name = f"auditq_convertbench_{os.getpid()}"
    configure(postgres_settings(url, name))
    from django.core.management import call_command
    from django.db import connection, connections

    from auditq import partitions

    created = False
    try:
        server_execute(url, f'CREATE DATABASE "{name}"')
        created = True
        call_command("migrate", verbosity=0, interactive=False)
        print(f"filling {args.entries:,} entries ...", flush=True)
        data = fill(args.entries)
        print(f"filled in {data.fill_seconds:.0f} s; converting while writing ...", flush=True)
        env = environment()
        stop, latencies, written = threading.Event(), [], []
        thread = threading.Thread(target=writer, args=(stop, args.rate, latencies, written))
        thread.start()
        time.sleep(2)
        before = len(latencies)
        began = time.perf_counter()
        done = partitions.convert("month", batch_size=args.batch_size)
        took = time.perf_counter() - began
        time.sleep(2)  # an insert the swap held up finishes after it
        stop.set()
        thread.join()
        during = latencies[before:]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), count(DISTINCT event_id) FROM auditq_auditentry")
            rows, distinct = cursor.fetchone()
            cursor.execute(
                "SELECT count(*) FROM auditq_auditentry WHERE event_id = ANY(%s)", [written]
            )
            found = cursor.fetchone()[0]
        print()
        for key, value in env.items():
            print(f"{key}: {value}")
        print(f"entries: {args.entries:,} filled, {len(written):,} written at {args.rate:.0f}/s")
        print(
            f"conversion: {took:.1f} s in all; {done.rows:,} rows copied in batches of "
            f"{args.batch_size:,} in {done.copy_seconds:.1f} s into {done.partitions} "
            f"partitions; SHARE locks {done.pause_seconds * 1000:.0f} ms in all; the swap's "
            f"ACCESS EXCLUSIVE lock {done.swap_seconds * 1000:.0f} ms"
        )
        ordered = sorted(during)
        print(
            f"writer during the conversion (and 2 s each side): {len(during):,} inserts, median "
            f"{statistics.median(during):.1f} ms, p99 {ordered[int(len(ordered) * 0.99)]:.1f} "
            f"ms, max {ordered[-1]:.0f} ms"
        )
        ok = rows == distinct == args.entries + len(written) and found == len(written)
        print(f"every entry once in the partitioned table: {'yes' if ok else 'NO'} ({rows:,})")
        return 0 if ok else 2
    except Exception:
        traceback.print_exc()
        print("BENCH FAILED")
        return 2
    finally:
        connections.close_all()
        if created and not args.keep:
            server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
