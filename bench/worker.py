#!/usr/bin/env python
"""auditq's worker side, with a real ``celery worker``: throughput, lag and memory.

Usage::

    .venv/bin/python bench/worker.py [--backlog N] [--seconds S] [--rate R]
                                     [--pool prefork|solo] [--concurrency C]
                                     [--writers W] [--timeout S] [--json FILE] [--quick]
                                     [--chain-rounds K] [--only-chain]

Method. A throwaway PostgreSQL database is created next to ``DATABASE_URL`` and Django
is set up with ``worker_settings`` (the ``@audited`` model ``AuditqRow``; Celery on the
Redis broker at ``REDIS_URL``; auditq's queue ``auditq-bench-<pid>``). Changes are made
by writer processes (this script run with ``--writer``), each ``save()`` its own
transaction. The worker is ``celery -A worker_celery worker -Q <queue>`` in a process
group of its own, ``-P prefork --concurrency 2`` by default (``--pool solo``).

1. **Throughput from a backlog.** With no worker running, ``--writers`` processes make
   ``--backlog`` saves as fast as they can. Then the worker starts, and the script waits
   until every change is recorded: ``AuditEntry`` count == saves and ``auditq_outbox``
   empty. Rate = entries / (last ``recorded_at`` - first ``recorded_at``), per worker
   process (one ``celery worker`` command, whatever its pool). Peak memory = ``VmHWM``
   of each process of the worker's group, sampled from ``/proc``.
2. **Lag under steady load.** The worker keeps running. One writer paced at ``--rate``
   saves/s for ``--seconds``, then two writers at ``--rate`` each. The lag of a change
   is ``recorded_at - occurred_at`` of its ``AuditEntry``; the script also reports the
   time from the last save until everything was recorded.

3. **Chaining on and off, side by side.** ``--chain-rounds`` times: a backlog of
   ``--backlog`` saves drained by a fresh worker with ``AUDITQ["CHAIN"]`` on, then one
   with it off (alternating, so that the machine's drift hits both alike); rate =
   entries / (last - first ``recorded_at`` of the drain). ``--only-chain`` runs this
   phase alone. At the end the unchained drains' entries are deleted and the chained
   ones verified (what ``auditq_verify`` checks); the report says in how many lanes
   they were recorded.

A phase whose changes are not all recorded ``--timeout`` seconds after its last save is
reported as not drained, with the figures of what was recorded; the worker is then
restarted on an empty outbox and queue, so that the next phase starts clean. Nothing
recorded for 60 s, or a backlog that left no outbox row, fails the run (exit 2).

Only the public behaviour is relied on: saving an ``@audited`` model commits outbox rows,
and a plain worker consuming auditq's queue records them. At the end the worker's process
group is killed, the queue purged and deleted, and the database dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from benchapp.values import row_values  # noqa: E402
from benchdb import delete_queue, postgres_url, server_execute  # noqa: E402

THROUGHPUT_TARGET = 15_000  # entries/s per worker process
LAG_P99_TARGET_MS = 200.0
REACHED = 0.98  # the offered rate counts as reached at 98%
STALL_SECONDS = 60.0  # nothing recorded for this long: the run fails


class BenchError(Exception):
    """The run is not measuring what it claims to (changes never recorded...)."""


# --------------------------------------------------------------------------- set-up


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="auditq worker throughput, lag and memory.")
    parser.add_argument("--backlog", type=int, default=100_000, help="saves in the backlog")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of a load phase")
    parser.add_argument("--rate", type=float, default=500.0, help="saves/s per paced writer")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool processes")
    parser.add_argument("--writers", type=int, default=4, help="processes writing the backlog")
    parser.add_argument(
        "--conn-max-age",
        type=float,
        default=0.0,
        help="Django's CONN_MAX_AGE in every process (default 0, Django's own default)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="longest wait for the worker to catch up"
    )
    parser.add_argument(
        "--no-notify",
        action="store_true",
        help='AUDITQ["NOTIFY"] = False and RELAY_POLL_SECONDS = 0.05 in every process: '
        "commits notify nobody, the relay polls",
    )
    parser.add_argument(
        "--chain-rounds",
        type=int,
        default=2,
        help="rounds of the chaining comparison (a backlog drained with AUDITQ['CHAIN'] "
        "on, then one with it off); 0 skips it",
    )
    parser.add_argument(
        "--only-chain", action="store_true", help="run the chaining comparison only"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    # Internal: run as one writer process (see writer()).
    parser.add_argument("--writer", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--for", dest="for_seconds", type=float, default=0.0, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.backlog, args.seconds, args.timeout = 2000, 5.0, 60.0
    return args


def bench_environment(
    db_name: str, queue: str, conn_max_age: float, notify: bool = True, chain: bool = True
) -> dict[str, str]:
    """The environment of every process of the run: this one, the writers, the worker."""
    path = [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "worker_settings",
        "BENCH_DB_NAME": db_name,
        "BENCH_QUEUE": queue,
        "BENCH_CONN_MAX_AGE": str(conn_max_age),
        "BENCH_NOTIFY": "1" if notify else "0",
        "BENCH_CHAIN": "1" if chain else "0",
        "PYTHONPATH": os.pathsep.join(path),
    }


def setup_django() -> Any:
    """Set Django and the bench's Celery app up in this process; return the app."""
    import django
    import worker_celery

    django.setup()
    return worker_celery.app


def create_tables() -> None:
    """Migrate the throwaway database and give the rows their owners."""
    from benchapp.models import Owner
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    Owner.objects.bulk_create(Owner(name=f"owner {i}") for i in range(10))


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    url, name = postgres_url(), f"auditq_workerbench_{os.getpid()}"
    server_execute(url, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- SQL


def scalar(sql: str, params: Sequence[Any] = ()) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def entries_table() -> str:
    from auditq.models import AuditEntry

    return AuditEntry._meta.db_table


def last_entry_id() -> int:
    return scalar(f'SELECT coalesce(max(id), 0) FROM "{entries_table()}"')


def recorded_since(after_id: int) -> int:
    return scalar(f'SELECT count(*) FROM "{entries_table()}" WHERE id > %s', [after_id])


def outbox_rows() -> int:
    return scalar("SELECT count(*) FROM auditq_outbox")


def wait_recorded(after_id: int, expected: int, poll: float, deadline: float) -> float | None:
    """Wait until ``expected`` entries past ``after_id`` exist and the outbox is empty.

    Returns when (``time.time()``) that was seen, or None once ``time.time()`` passes
    ``deadline``. Fails if nothing moves for ``STALL_SECONDS``.
    """
    last_move, last_state = time.monotonic(), None
    while True:
        if not scalar("SELECT EXISTS (SELECT 1 FROM auditq_outbox)"):
            seen, recorded = time.time(), recorded_since(after_id)
            if recorded == expected:
                return seen
            if recorded > expected:
                raise BenchError(f"{recorded} entries recorded for {expected} changes")
            state: Any = ("recorded", recorded)
        else:
            state = ("outbox", outbox_rows())
        if time.time() > deadline:
            return None
        if state != last_state:
            last_move, last_state = time.monotonic(), state
        elif time.monotonic() - last_move > STALL_SECONDS:
            raise BenchError(
                f"nothing recorded for {STALL_SECONDS:.0f} s: {recorded_since(after_id)} of "
                f"{expected} changes recorded, {outbox_rows()} outbox rows left"
            )
        time.sleep(poll)


# --------------------------------------------------------------------------- writers


def writer(count: int, offset: int, pace: float, seconds: float) -> None:
    """One writer process: up to ``count`` saves of ``AuditqRow``, each its own transaction.

    ``pace`` saves/s (0: as fast as possible), stopping after ``seconds`` if given (a
    writer slower than its pace makes fewer saves). Prints its figures as JSON on stdout.
    """
    setup_django()
    from benchapp.models import AuditqRow, Owner
    from django.db import connections

    owners = list(Owner.objects.values_list("pk", flat=True))
    values = [row_values(offset + i, owners) for i in range(count)]
    start, clock = time.time(), time.monotonic()
    saves = 0
    for i, row in enumerate(values):
        if pace:
            delay = clock + i / pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if seconds and time.monotonic() - clock >= seconds:
            break
        AuditqRow(**row).save()
        saves += 1
    end = time.time()
    connections.close_all()
    print(json.dumps({"saves": saves, "start": start, "end": end}), flush=True)


@dataclass
class Writers:
    """Writer processes started together; ``wait()`` returns their figures."""

    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(
        self, processes: int, total: int, offset: int, pace: float = 0.0, seconds: float = 0.0
    ) -> dict[str, float]:
        """Start the writers, wait for them, and kill them if anything goes wrong."""
        try:
            self.start(processes, total, offset, pace, seconds)
            return self.wait()
        finally:
            self.kill()

    def start(self, processes: int, total: int, offset: int, pace: float, seconds: float) -> None:
        share = [total // processes + (i < total % processes) for i in range(processes)]
        for i, count in enumerate(share):
            command = [sys.executable, __file__, "--writer", str(count), "--pace", str(pace)]
            command += ["--for", str(seconds), "--offset", str(offset + sum(share[:i]))]
            self.procs.append(
                subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, text=True)
            )

    def wait(self) -> dict[str, float]:
        results = []
        for proc in self.procs:
            out, _ = proc.communicate()
            if proc.returncode:
                raise BenchError(f"a writer process failed (exit {proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        start = min(r["start"] for r in results)
        end = max(r["end"] for r in results)
        saves = sum(r["saves"] for r in results)
        return {"saves": saves, "start": start, "end": end, "rate": saves / (end - start)}

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs = []


# --------------------------------------------------------------------------- chaining


def chain_comparison(
    args: argparse.Namespace, app: Any, queue: str, env: dict[str, str], tmp: Path, offset: int
) -> dict[str, Any]:
    """Recording throughput with and without chaining, from equal backlogs, alternating
    (chained, then unchained, ``--chain-rounds`` times) so that the machine's drift hits
    both alike. Each drain: the backlog written with no worker running, then a fresh
    worker (``AUDITQ["CHAIN"]`` on or off) records it; rate = entries / (last - first
    ``recorded_at`` of the drain)."""
    rates: dict[str, list[float]] = {"chained": [], "unchained": []}
    for round_ in range(args.chain_rounds):
        for mode in rates:
            print(f"== chaining, round {round_ + 1}: {mode}, {args.backlog:,} saves", flush=True)
            after = last_entry_id()
            Writers(env).run(args.writers, args.backlog, offset=offset)
            offset += args.backlog
            worker_env = {**env, "BENCH_CHAIN": "1" if mode == "chained" else "0"}
            worker = Worker(args, queue, worker_env, tmp / f"worker-{mode}.log")
            worker.start(app)
            try:
                done = wait_recorded(
                    after, args.backlog, poll=0.5, deadline=worker.started + args.timeout
                )
            finally:
                worker.stop()
            if done is None:
                raise BenchError(f"the {mode} drain was not recorded in {args.timeout:.0f} s")
            span = scalar(
                "SELECT extract(epoch FROM max(recorded_at) - min(recorded_at)) "
                f'FROM "{entries_table()}" WHERE id > %s',
                [after],
            )
            rates[mode].append(args.backlog / float(span))
    chained = scalar(f'SELECT count(*) FROM "{entries_table()}" WHERE chain_hash <> %s', [""])
    lanes = scalar(
        f'SELECT count(DISTINCT chain_lane) FROM "{entries_table()}" WHERE chain_hash <> %s', [""]
    )
    # The chained drains must verify. The unchained drains' entries belong to no lane,
    # but verification counts an unchained entry after the chain started as a break:
    # they go first.
    from auditq.chain import verify

    scalar(
        f'WITH gone AS (DELETE FROM "{entries_table()}" WHERE chain_hash = %s '
        "RETURNING 1) SELECT count(*) FROM gone",
        [""],
    )
    [result] = verify.verify(store=False)
    return {
        "rates": rates,
        "chained_entries": chained,
        "lanes": lanes,
        "verified": result.verified,
        "verify": result.describe(),
    }


def report_chain(comparison: dict[str, Any]) -> list[str]:
    rates = comparison["rates"]
    best = {mode: max(values) for mode, values in rates.items()}
    ratio = best["chained"] / best["unchained"]
    mark = "PASS" if ratio >= 0.9 else "MISS"
    lines = ["Recording throughput with and without chaining (entries/s per worker process)"]
    for mode, values in rates.items():
        lines.append(
            f"  {mode:>9}: "
            + ", ".join(f"{value:,.0f}" for value in values)
            + f"   best {best[mode]:,.0f}"
        )
    lines.append(f"  chained / unchained (best of each): {ratio:.1%}   target >= 90%: {mark}")
    means = {mode: sum(values) / len(values) for mode, values in rates.items()}
    lines.append(f"  chained / unchained (means): {means['chained'] / means['unchained']:.1%}")
    if "lanes" in comparison:
        lines.append(
            f"  {comparison['chained_entries']:,} chained entries in {comparison['lanes']} lanes; "
            f"verify: {comparison['verify']}"
        )
    return lines


# --------------------------------------------------------------------------- the worker


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid``, from ``/proc``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            pids.append(int(entry))
    return pids


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used so far, ``None`` if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def peak_rss_kb(pid: int) -> int:
    """``VmHWM`` (peak resident set) of ``pid`` in kB, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Samples the peak RSS of every process of a group into ``peaks``, and the CPU time
    each has used into ``cpu`` (a process that exits keeps its last sample), until stopped."""

    def __init__(
        self, pgid: int, peaks: dict[int, int], cpu: dict[int, float], interval: float = 0.2
    ) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.pgid, self.peaks, self.cpu, self.interval = pgid, peaks, cpu, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for pid in group_pids(self.pgid):
            self.peaks[pid] = max(self.peaks.get(pid, 0), peak_rss_kb(pid))
            used = cpu_seconds(pid)
            if used is not None:
                self.cpu[pid] = used


class Worker:
    """``celery -A worker_celery worker -Q <queue>`` in a process group of its own."""

    def __init__(self, args: argparse.Namespace, queue: str, env: dict[str, str], log: Path):
        self.hostname = f"auditq-bench-{os.getpid()}@{socket.gethostname()}"
        self.command = ["celery", "-A", "worker_celery", "worker", "-Q", queue]
        self.command += ["-n", self.hostname, "-P", args.pool]
        if args.pool == "prefork":
            self.command += ["--concurrency", str(args.concurrency)]
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None
        self.sampler: MemorySampler | None = None
        self.peaks: dict[int, int] = {}  # pid -> peak RSS (kB), over every start
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds used, over every start
        self.leaders: list[int] = []  # the main process of every start
        self.started = 0.0

    def start(self, app: Any) -> float:
        """Start it and wait until it answers a ping; return when it did."""
        self.started = time.time()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.command],
                cwd=BENCH_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        self.leaders.append(self.proc.pid)
        self.sampler = MemorySampler(self.proc.pid, self.peaks, self.cpu)
        self.sampler.start()
        return self.wait_ready(app)

    def wait_ready(self, app: Any, timeout: float = 120.0) -> float:
        """Ping it until it answers (Celery 5.7's worker does not log "ready" at INFO)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the worker exited with {self.proc.returncode}")
            if app.control.ping(destination=[self.hostname], timeout=0.5):
                return time.time()
        raise BenchError(f"the worker did not answer a ping within {timeout:.0f} s")

    def memory(self) -> dict[str, Any]:
        """Peak RSS so far: main process, largest pool process, sum over processes."""
        if self.sampler is not None:
            self.sampler.sample()
        pool = [kb for pid, kb in self.peaks.items() if pid not in self.leaders]
        return {
            "processes": len(self.peaks),
            "main_mb": max((self.peaks.get(pid, 0) for pid in self.leaders), default=0) / 1024,
            "pool_process_max_mb": max(pool, default=0) / 1024,
            "sum_of_peaks_mb": sum(self.peaks.values()) / 1024,
        }

    def cpu_used(self) -> float:
        """CPU seconds used by the worker's processes so far, over every start. Unlike a
        rate, CPU per entry barely moves when other work shares the machine."""
        if self.sampler is not None:
            self.sampler.sample()
        return sum(self.cpu.values())

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the whole group; SIGKILL to whatever is left 20 s later."""
        if self.sampler is not None:
            self.sampler.sample()
            self.sampler.stopped.set()
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        deadline = time.monotonic() + 10
        while group_pids(pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)
        self.proc.wait()
        self.proc = None


def restart_clean(worker: Worker, app: Any, queue: str) -> None:
    """After a phase that was not drained: drop what is left, so the next phase starts
    clean (worker stopped, queue purged, outbox emptied, worker started again)."""
    from django.db import connection

    worker.stop()
    delete_queue(app, queue)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE auditq_outbox")
    worker.start(app)


# --------------------------------------------------------------------------- phases


def throughput(
    args: argparse.Namespace, worker: Worker, app: Any, queue: str, env: dict[str, str]
) -> dict[str, Any]:
    """The backlog first, with no worker running; then one worker drains it."""
    print(f"== backlog: {args.backlog:,} saves by {args.writers} writer processes", flush=True)
    written = Writers(env).run(args.writers, args.backlog, offset=0)
    backlog_rows = outbox_rows()
    if backlog_rows == 0:
        raise BenchError("the backlog left no outbox row: auditq captured nothing")
    print(
        f"   written in {written['end'] - written['start']:.1f} s ({written['rate']:,.0f} "
        f"saves/s)\n== worker: {' '.join(worker.command)}",
        flush=True,
    )
    ready = worker.start(app)
    cpu_at_ready = worker.cpu_used()
    done = wait_recorded(0, args.backlog, poll=0.5, deadline=worker.started + args.timeout)
    recorded = recorded_since(0)
    cpu = worker.cpu_used() - cpu_at_ready
    first_last = scalar(
        f'SELECT extract(epoch FROM max(recorded_at) - min(recorded_at)) FROM "{entries_table()}"'
    )
    span = float(first_last or 0) or float("nan")
    result = {
        "backlog": args.backlog,
        "writers": args.writers,
        "write_seconds": written["end"] - written["start"],
        "write_rate": written["rate"],
        "outbox_rows": backlog_rows,
        "ready_after_s": ready - worker.started,
        "recorded_after_s": None if done is None else done - worker.started,
        "recorded": recorded,
        "recording_s": span,
        "entries_per_s": recorded / span,
        "cpu_us_per_entry": cpu / recorded * 1e6 if recorded else None,
        "memory": worker.memory(),
    }
    if done is None:
        restart_clean(worker, app, queue)
    return result


def steady_load(
    args: argparse.Namespace,
    writers: int,
    worker: Worker,
    app: Any,
    queue: str,
    env: dict[str, str],
    offset: int,
) -> dict[str, Any]:
    """``writers`` processes at ``--rate`` saves/s each for ``--seconds``; lag of each change."""
    offered = writers * args.rate
    print(f"== steady load: {writers} writer(s) at {args.rate:.0f}/s for {args.seconds:.0f} s")
    after = last_entry_id()
    total = round(offered * args.seconds)
    cpu_before = worker.cpu_used()
    written = Writers(env).run(writers, total, offset, pace=args.rate, seconds=args.seconds)
    saves = int(written["saves"])
    done = wait_recorded(after, saves, poll=0.01, deadline=written["end"] + args.timeout)
    recorded = recorded_since(after)
    cpu = worker.cpu_used() - cpu_before
    result = {
        "writers": writers,
        "saves": saves,
        "offered_per_s": offered,
        "reached_per_s": written["rate"],
        "rate_reached": written["rate"] >= REACHED * offered,
        "recorded": recorded,
        "cpu_us_per_entry": cpu / recorded * 1e6 if recorded else None,
        "drained_after_last_save_ms": None if done is None else (done - written["end"]) * 1000,
        **lag_figures(after),
    }
    drained = result["drained_after_last_save_ms"]
    after_last = "not drained" if drained is None else f"drained {drained:,.0f} ms after"
    p99 = result["lag_p99_ms"] or 0.0
    print(f"   {saves:,} saves ({written['rate']:,.0f}/s), p99 {p99:,.0f} ms, {after_last}")
    if done is None:
        restart_clean(worker, app, queue)
    return result


def lag_figures(after_id: int) -> dict[str, float]:
    """Percentiles of ``recorded_at - occurred_at`` (ms) over the entries past ``after_id``."""
    from django.db import connection

    sql = f"""
        SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lag), max(lag)
        FROM (SELECT extract(epoch FROM recorded_at - occurred_at) * 1000 AS lag
              FROM "{entries_table()}" WHERE id > %s) AS entries
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [after_id])
        quantiles, most = cursor.fetchone()
    p50, p95, p99 = quantiles or (None, None, None)
    return {
        "lag_p50_ms": p50,
        "lag_p95_ms": p95,
        "lag_p99_ms": p99,
        "lag_max_ms": None if most is None else float(most),
    }


# --------------------------------------------------------------------------- report


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def report_throughput(tp: dict[str, Any], pool: str, timeout: float) -> list[str]:
    memory = tp["memory"]
    drained = tp["recorded_after_s"] is not None
    mark = "PASS" if drained and tp["entries_per_s"] >= THROUGHPUT_TARGET else "MISS"
    done = (
        f"everything recorded {tp['recorded_after_s']:.1f} s after start"
        if drained
        else f"NOT DRAINED: {tp['recorded']:,} of {tp['backlog']:,} recorded in {timeout:.0f} s"
    )
    return [
        f"Throughput from a backlog of {tp['backlog']:,} single-save transactions",
        f"  backlog written by {tp['writers']} processes in {tp['write_seconds']:.1f} s "
        f"({tp['write_rate']:,.0f} saves/s), {tp['outbox_rows']:,} outbox rows",
        f"  the worker answered a ping {tp['ready_after_s']:.1f} s after its start; {done}",
        f"  {tp['entries_per_s']:,.0f} entries/s per worker process ({pool}; "
        f"{tp['recorded']:,} entries, first to last recorded_at {tp['recording_s']:.1f} s)"
        f"   target >= {THROUGHPUT_TARGET:,}: {mark}",
        f"  worker CPU {ms(tp['cpu_us_per_entry'])} µs an entry (user + system, every process "
        "of the worker; steadier than the rate on a shared machine)",
        f"  peak RSS: main process {memory['main_mb']:.0f} MB, largest pool process "
        f"{memory['pool_process_max_mb']:.0f} MB, {memory['processes']} processes, "
        f"{memory['sum_of_peaks_mb']:.0f} MB summed",
    ]


def report_steady(loads: list[dict[str, Any]], timeout: float) -> list[str]:
    lines = [
        "Lag under steady load (recorded_at - occurred_at; creates, one save per transaction)",
        f"  {'writers':>7} {'offered/s':>9} {'reached/s':>9} {'saves':>7} {'recorded':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'drained ms':>10} "
        f"{'CPU µs':>7}  target",
    ]
    for load in loads:
        drained = load["drained_after_last_save_ms"]
        ok = drained is not None and load["rate_reached"] and load["lag_p99_ms"] < LAG_P99_TARGET_MS
        lines.append(
            f"  {load['writers']:>7} {load['offered_per_s']:>9,.0f} {load['reached_per_s']:>9,.0f} "
            f"{load['saves']:>7,} {load['recorded']:>8,} {ms(load['lag_p50_ms']):>7} "
            f"{ms(load['lag_p95_ms']):>7} {ms(load['lag_p99_ms']):>7} "
            f"{ms(load['lag_max_ms']):>7} "
            f"{ms(drained) if drained is not None else f'> {timeout:.0f} s':>10} "
            f"{ms(load['cpu_us_per_entry']):>7}  {'PASS' if ok else 'MISS'}"
        )
    lines.append(
        f"  target: p99 < {LAG_P99_TARGET_MS:.0f} ms with the offered rate reached "
        f"(>= {REACHED:.0%}); drained = from the last save until everything was recorded;"
        "\n  CPU = the worker's CPU time an entry (user + system, every process)"
    )
    if any(load["drained_after_last_save_ms"] is None for load in loads):
        lines.append(
            "  (not drained: the percentiles cover the recorded changes only, a lower bound)"
        )
    return lines


def report(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = ["", f"Worker: {result['worker']} ({result['pool']})"]
    if "throughput" in result:
        memory = result["memory"]
        lines += [
            *report_throughput(result["throughput"], result["pool"], args.timeout),
            "",
            *report_steady(result["steady"], args.timeout),
            f"Peak RSS over the whole run: main process {memory['main_mb']:.0f} MB, largest "
            f"pool process {memory['pool_process_max_mb']:.0f} MB, "
            f"{memory['sum_of_peaks_mb']:.0f} MB summed over {memory['processes']} processes",
        ]
    if "chain" in result:
        lines += ["", *report_chain(result["chain"])]
    return lines


def environment() -> dict[str, Any]:
    packages = ["auditq", "Django", "celery", "kombu", "redis", "psycopg"]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "packages": {p: version(p) for p in packages},
    }


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    queue = f"auditq-bench-{os.getpid()}"
    with (
        throwaway_database() as db_name,
        tempfile.TemporaryDirectory(prefix="auditq-workerbench-") as tmp,
    ):
        env = bench_environment(db_name, queue, args.conn_max_age, not args.no_notify)
        os.environ.update(env)
        app = setup_django()
        create_tables()
        worker = Worker(args, queue, env, Path(tmp) / "worker.log")
        pool = "solo" if args.pool == "solo" else f"prefork, {args.concurrency} pool processes"
        pool += f", CONN_MAX_AGE={args.conn_max_age:g}"
        try:
            result: dict[str, Any] = {"worker": " ".join(worker.command), "pool": pool}
            offset = 0
            if not args.only_chain:
                result["throughput"] = throughput(args, worker, app, queue, env)
                result["steady"] = []
                for n, writers in enumerate((1, 2)):
                    offset = args.backlog + n * round(args.rate * args.seconds)
                    load = steady_load(args, writers, worker, app, queue, env, offset)
                    result["steady"].append(load)
                offset = args.backlog + 3 * round(args.rate * args.seconds)  # past them all
                result["memory"] = worker.memory()
                worker.stop()
            if args.chain_rounds:
                result["chain"] = chain_comparison(args, app, queue, env, Path(tmp), offset)
            return result
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- worker log (tail) ---\n{worker.tail()}") from exc
        finally:
            worker.stop()
            delete_queue(app, queue)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.writer is not None:
        writer(args.writer, args.offset, args.pace, args.for_seconds)
        return 0
    return run_and_report("worker bench", args, run, report)


def run_and_report(
    title: str,
    args: argparse.Namespace,
    measure: Callable[[argparse.Namespace], dict[str, Any]],
    describe: Callable[[dict[str, Any], argparse.Namespace], list[str]],
) -> int:
    """A bench script's main run: measure, print the report (and ``--json``), exit code.

    Exit 2 with ``BENCH FAILED: ...`` when a sanity check fails; SIGTERM unwinds like
    Ctrl-C (workers and writers killed, queue and database removed).
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.json:
        args.json = os.path.abspath(args.json)
    # Every process of the run works in bench/, the bench project's directory (Celery's
    # Django fixup puts the current directory first on sys.path).
    os.chdir(BENCH_DIR)
    env = environment()
    versions = ", ".join(f"{p} {v}" for p, v in env["packages"].items())
    print(f"{title}, {env['date']}: Python {env['python']}, {env['cpus']} CPUs; {versions}")
    try:
        result = measure(args)
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe(result, args)), flush=True)
    if args.json:
        data = {**env, "load_average_end": os.getloadavg(), **result, "args": vars(args)}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
