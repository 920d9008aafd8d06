"""``make soak``: minutes of mixed writes at a steady rate on the real stack, a worker
SIGKILLed every minute and Redis restarted twice (its data lost); then the fault table's
row, the commit-to-recorded lag p99 and each worker's memory over time.

Runs on PostgreSQL (``DATABASE_URL``, default the local server) in a database of its own
(created, then dropped), with a private ``redis-server`` and ``celery worker`` processes
(prefork, as in production). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10.0, help="transactions per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "soak.md")
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.workers < 1:
        parser.error("--minutes and --rate must be positive, --workers at least 1")

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"auditq_soak_{os.getpid()}"
    _admin(url, f"CREATE DATABASE {name}")
    try:
        return _soak(args, url, name)
    finally:
        _admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql)


def _soak(args: argparse.Namespace, url: str, name: str) -> int:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=url,
        AUDITQ_TEST_WORKER_DB=name,
        AUDITQ_TEST_EAGER="0",
    )
    workdir = Path(tempfile.mkdtemp(prefix="auditq-soak-"))
    from tests.conftest import RedisServer

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("soak: redis-server is not installed")
    redis = RedisServer(binary, workdir)
    redis.start()
    os.environ["AUDITQ_TEST_BROKER_URL"] = redis.url

    import django

    django.setup()
    from django.core.management import call_command

    from tests.conftest import Worker
    from tests.integration import faults

    call_command("migrate", verbosity=0)
    # Lost messages are published again after 30 s (the default is 60). Much shorter, and
    # a backlog of handler runs is published again and again while it waits.
    sweep = {"AUDITQ_TEST_RELAY_AFTER_SECONDS": "30"}

    def start() -> Worker:
        return Worker(redis.url, workdir, pool="prefork").start(**sweep)

    workers = [start() for _ in range(args.workers)]
    memory: list[tuple[float, list[float]]] = []
    parent = faults.team()
    seconds = args.minutes * 60
    redis_restarts = {seconds / 3, 2 * seconds / 3}
    began = time.monotonic()
    next_kill = 60.0
    next_sample = 0.0
    written = updates = 0
    exits: list[str] = []  # workers that ended by themselves, with their last words
    try:
        while (now := time.monotonic() - began) < seconds:
            written += faults.write(parent, 1, start=written)
            if written % 3 == 0:
                updates += _update_one(written)
            if now >= next_kill:  # a worker SIGKILLed mid-whatever, replaced at once
                next_kill += 60
                doomed = workers.pop(random.randrange(len(workers)))
                doomed.kill(signal.SIGKILL)
                workers.append(start())
            for worker in [w for w in workers if w.process.poll() is not None]:
                # As a process supervisor would (systemd's Restart=always, Kubernetes):
                # a worker that ended by itself is started again.
                exits.append(_last_words(worker))
                workers.remove(worker)
                workers.append(start())
            for moment in sorted(redis_restarts):
                if now >= moment:  # no persistence: queued messages are lost
                    redis_restarts.discard(moment)
                    redis.stop()
                    redis.start()
            if now >= next_sample:
                next_sample += 10
                memory.append((now, [_rss_mb(worker) for worker in workers]))
            time.sleep(max(0.0, began + (written + 1) / args.rate - time.monotonic()))
        settle_began = time.monotonic()
        try:
            faults.settled(timeout=900)
            settled = f"quiet {time.monotonic() - settle_began:.0f} s after the last write"
        except AssertionError as exc:  # reported, and counted as it stands
            settled = (
                f"NOT quiet {time.monotonic() - settle_began:.0f} s after the last write: {exc}"
            )
        row = faults.measure("soak", parent)
        lag = _lag_p99()
    finally:
        for worker in workers:
            worker.stop()
        redis.stop()
    _report(args, row, updates, lag, memory, exits, settled, time.monotonic() - began)
    return 0 if row.clean and _updates_recorded() == updates else 1


def _update_one(number: int) -> int:
    from django.db import DatabaseError, transaction

    from tests.testapp.models import Document

    try:
        with transaction.atomic():
            document = Document.objects.order_by("?").first()
            if document is None:
                return 0
            document.body = f"edit {number}"
            document.save()
    except DatabaseError:
        return 0
    return 1


def _updates_recorded() -> int:
    from auditq.models import AuditEntry
    from tests.testapp.models import Document

    return AuditEntry.objects.for_model(Document).filter(action="update").count()


def _lag_p99() -> tuple[float, float]:
    """Commit-to-recorded lag of every entry (ms): p50 and p99. Counts the faults too."""
    from auditq.models import AuditEntry

    lags = sorted(
        (recorded - occurred).total_seconds() * 1000
        for occurred, recorded in AuditEntry.objects.values_list("occurred_at", "recorded_at")
    )
    if not lags:
        return 0.0, 0.0
    return lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]


def _rss_mb(worker) -> float:
    """Resident memory of a worker process and its pool's children, in MB."""
    total = 0
    pids = [worker.process.pid]
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    if children.exists():
        pids += [int(pid) for pid in children.read_text().split()]
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _last_words(worker) -> str:
    """The worker's ``CRITICAL`` line, the reason it gave for ending."""
    lines = worker.log.read_text().splitlines()
    return next(
        (line for line in reversed(lines) if "CRITICAL" in line), lines[-1] if lines else "?"
    )


def _report(
    args, row, updates: int, lag, memory, exits: list[str], settled: str, took: float
) -> None:
    from tests.integration.faults import COLUMNS

    lines = [
        f"# Soak: {args.minutes:g} minutes at {args.rate:g} transactions/s",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, PostgreSQL, "
        f"{args.workers} prefork workers (one SIGKILLed and replaced every minute), Redis "
        f"restarted twice without persistence; {took:.0f} s in all. Each transaction: an "
        "audited create, a handler's effect, a counted child; every third, an update.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
        "| " + " | ".join(row.cells()) + " |",
        "",
        f"The system was {settled[:500]}.",
        "",
        f"Updates committed: {updates}, recorded: {_updates_recorded()}. Commit-to-recorded "
        f"lag over every entry, faults included: p50 {lag[0]:.0f} ms, p99 {lag[1]:.0f} ms.",
        "",
        f"Workers that ended by themselves (and were started again, as a supervisor "
        f"would): {len(exits)}.",
        *(f"- `{line[:300]}`" for line in exits),
        "",
        "Worker memory (RSS of each worker process with its pool child, MB, by slot; a "
        "slot's worker is replaced when killed), every 10 s:",
        "",
        "| second | " + " | ".join(f"worker {n + 1}" for n in range(args.workers)) + " |",
        "| --- | " + " | ".join("---" for _ in range(args.workers)) + " |",
        *(
            f"| {at:.0f} | " + " | ".join(f"{mb:.0f}" for mb in sizes) + " |"
            for at, sizes in memory
        ),
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
