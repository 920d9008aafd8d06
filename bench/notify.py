"""Commits per second of concurrent writers, with and without ``NOTIFY`` (``AUDITQ["NOTIFY"]``).

PostgreSQL serializes the commits of transactions that sent a ``NOTIFY`` (a global lock
held until the commit is flushed). Each writer process calls auditq's outbox function
(``auditq_outbox_put``, as migrated) in autocommit as fast as it can, with a 300-byte
payload; a ``LISTEN`` connection stays open, as a worker's relay holds one. Writers 1, 4
and 8, each mode measured ``--rounds`` times in turn, ``--seconds`` each.

    .venv/bin/python bench/notify.py [--seconds 4] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdb import postgres_settings, postgres_url, server_execute

WRITERS = (1, 4, 8)
MODES = {"NOTIFY": "true", "no NOTIFY": "false"}


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


def write(params: dict[str, Any], notify: str, seconds: float, done: Any) -> None:
    import psycopg

    with psycopg.connect(**params, autocommit=True) as connection:
        commits, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            connection.execute(f"SELECT auditq_outbox_put(%s, notify => {notify})", ["x" * 300])
            commits += 1
    done.put(commits)


def measure(params: dict[str, Any], writers: int, notify: str, seconds: float) -> float:
    done: Any = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=write, args=(params, notify, seconds, done))
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return sum(done.get() for _ in processes) / seconds


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
    try:
        migrate(database)
        import psycopg

        results: dict[str, dict[str, list[float]]] = {}
        with psycopg.connect(**params, autocommit=True) as listener:
            listener.execute("LISTEN auditq_outbox")
            for writers in WRITERS:
                found = results[str(writers)] = {mode: [] for mode in MODES}
                for _ in range(args.rounds):
                    for mode, notify in MODES.items():
                        found[mode].append(measure(params, writers, notify, args.seconds))
                        for _ in listener.notifies(timeout=0):  # keep the queue empty
                            pass
                print(
                    f"{writers} writer(s): "
                    + ", ".join(
                        f"{mode} {min(v):,.0f}-{max(v):,.0f} commits/s" for mode, v in found.items()
                    ),
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
