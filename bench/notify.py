"""Commits per second of concurrent writers: ``NOTIFY`` at each commit, only when a relay
waits (auditq's default), and never (``AUDITQ["NOTIFY"] = False``).

PostgreSQL serializes the commits of transactions that sent a ``NOTIFY`` (a global lock
held until the commit is flushed). Each writer process calls auditq's outbox function
(``auditq_outbox_put``, as migrated) in autocommit as fast as it can, with a 300-byte
payload. A relay process runs beside them in every mode, as a worker's relay does, minus
the recording: it deletes the rows ``RELAY_BATCH_SIZE`` (500) at a time until none is
left, then waits for a notification or its poll (``RELAY_POLL_SECONDS``, 0.2 s); in the
default mode it first asks for a notification (``PostgreSQLBackend.want_notify``: a
``setval`` of ``auditq_relay_idle``) and looks once more. "At each commit" is the outbox
function before migration 0017, created in the throwaway database under another name.
A fourth mode, "no NOTIFY, eager relay", is the control (see ``MODES``).
Writers 1, 4 and 8; in each round the modes run in turn, ``--seconds`` each, and
each mode's rate is divided by the no-NOTIFY rate of the same round (the machine may be
shared: the ratio of neighbours holds better).

    .venv/bin/python bench/notify.py [--seconds 4] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdb import postgres_settings, postgres_url, server_execute

WRITERS = (1, 4, 8)
POLL_SECONDS = 0.2
BATCH = 500
MODES = {
    "NOTIFY at each commit": "bench_outbox_put_always(%s)",
    "NOTIFY when a relay waits": "auditq_outbox_put(%s)",
    "no NOTIFY": "auditq_outbox_put(%s, notify => false)",
    "no NOTIFY, eager relay": "auditq_outbox_put(%s, notify => false)",
}
"""Each mode's outbox call. The last mode's relay looks again 1 ms after a round that
found nothing: it works as hard as a busy relay of the default mode, so that the two
differ only in what the writers do (the flag's read), not in the relay's share of the
2 cores."""
ALWAYS = """
CREATE FUNCTION bench_outbox_put_always(payload text) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO auditq_outbox (created_at, payload, key) VALUES (now(), payload, '');
    PERFORM pg_notify('auditq_outbox', '');
    RETURN 1;
END
$$;
"""
TAKE = (
    "DELETE FROM auditq_outbox WHERE id IN (SELECT id FROM auditq_outbox ORDER BY id "
    f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED)"
)


def connection_params(database: dict[str, Any]) -> dict[str, Any]:
    """psycopg's keywords for a ``DATABASES`` entry."""
    keys = {
        "NAME": "dbname",
        "USER": "user",
        "PASSWORD": "password",
        "HOST": "host",
        "PORT": "port",
    }
    return {key: database[name] for name, key in keys.items() if database[name]}


def migrate(database: dict[str, Any]) -> None:
    """Create auditq's tables and function in the throwaway database, as ``migrate`` does."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        INSTALLED_APPS=["auditq", "django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={"default": database},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def write(params: dict[str, Any], call: str, seconds: float, done: Any) -> None:
    import psycopg

    with psycopg.connect(**params, autocommit=True) as connection:
        commits, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            connection.execute(f"SELECT {call}", ["x" * 300])
            commits += 1
    done.put(commits)


def relay(params: dict[str, Any], mode: str, stop: Any, done: Any) -> None:
    """The relay's loop, as ``auditq.delivery.worker`` runs it; puts the wake-ups heard."""
    import psycopg

    from auditq.backends.postgresql import PostgreSQLBackend

    heard = 0
    with (
        psycopg.connect(**params, autocommit=True) as db,
        psycopg.connect(**params, autocommit=True) as listener,
    ):
        listener.execute("LISTEN auditq_outbox")
        while not stop.is_set():
            while db.execute(TAKE).rowcount:
                pass
            if mode.startswith("no NOTIFY"):
                stop.wait(POLL_SECONDS if mode == "no NOTIFY" else 0.001)
                continue
            for _ in listener.notifies(timeout=0):
                pass
            if mode == "NOTIFY when a relay waits":
                PostgreSQLBackend().want_notify(listener)
                if db.execute(TAKE).rowcount:
                    continue
            for _ in listener.notifies(timeout=POLL_SECONDS, stop_after=1):
                heard += 1
    done.put(heard)


def measure(params: dict[str, Any], writers: int, mode: str, seconds: float) -> tuple[float, int]:
    """Commits/s of ``writers`` processes in ``mode``, and the relay's wake-ups by NOTIFY."""
    done: Any = multiprocessing.Queue()
    stop: Any = multiprocessing.Event()
    woken: Any = multiprocessing.Queue()
    taker = multiprocessing.Process(target=relay, args=(params, mode, stop, woken))
    taker.start()
    processes = [
        multiprocessing.Process(target=write, args=(params, MODES[mode], seconds, done))
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    stop.set()
    taker.join()
    return sum(done.get() for _ in processes) / seconds, woken.get()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    server, name = postgres_url(), f"auditq_notify_{os.getpid()}"
    server_execute(server, f'CREATE DATABASE "{name}"')
    database = postgres_settings(server, name)
    params = connection_params(database)
    results: dict[str, Any] = {}
    try:
        migrate(database)
        import psycopg

        with psycopg.connect(**params, autocommit=True) as connection:
            connection.execute(ALWAYS)
        for writers in WRITERS:
            rates: dict[str, list[float]] = {mode: [] for mode in MODES}
            ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
            wakeups: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    rate, heard = measure(params, writers, mode, args.seconds)
                    rates[mode].append(rate)
                    wakeups[mode].append(heard / args.seconds)
                for mode in MODES:
                    ratios[mode].append(rates[mode][-1] / rates["no NOTIFY"][-1])
            results[str(writers)] = {"rates": rates, "ratios": ratios, "wakeups": wakeups}
            print(f"{writers} writer(s):", flush=True)
            for mode in MODES:
                print(
                    f"   {mode:26} {min(rates[mode]):7,.0f}-{max(rates[mode]):7,.0f} commits/s, "
                    f"{statistics.median(ratios[mode]):.3f}x no NOTIFY (median of rounds; "
                    f"{min(ratios[mode]):.3f}-{max(ratios[mode]):.3f}), relay woken "
                    f"{statistics.median(wakeups[mode]):,.0f}/s",
                    flush=True,
                )
    finally:
        from django.db import connections

        connections.close_all()
        server_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
