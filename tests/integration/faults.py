"""The fault suite's workload, its measure and its table (README "Guarantees").

Each committed transaction of the workload makes one audited change (a ``Document``), one
change whose handler leaves an ``Effect`` (a closed ``Ticket``) and one counted child (a
``Player`` of one ``Team``, counted and summed). After a fault, the system is left to
become quiet, then every committed change is looked for: recorded once, counters exact,
no handler effect twice, no operation step twice.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db import DatabaseError, connection, transaction
from django.db.models import Sum

from auditq.models import AuditEntry, CallbackRun, CounterDelta, OperationRun, Outbox
from tests.conftest import ROOT, Worker, wait_for
from tests.integration.test_delivery import quiet
from tests.testapp.models import Document, Effect, Player, Team, Ticket

TABLE = ROOT / "docs" / "fault-table.md"
COLUMNS = (
    "scenario",
    "changes committed",
    "entries recorded",
    "duplicates",
    "lost",
    "counters exact",
    "callbacks doubled",
    "steps doubled",
    "workers restarted",
)


@dataclass
class Row:
    """One line of the fault table."""

    scenario: str
    committed: int
    recorded: int
    duplicates: int
    lost: int
    counters_exact: bool
    callbacks_doubled: int
    steps_doubled: int | None = None  # only where the scenario runs an operation
    effects: int = 0  # changes whose handler left its effect (at least once)
    restarted: int = 0  # workers that ended by themselves and were started again

    def cells(self) -> list[str]:
        steps = "n/a" if self.steps_doubled is None else str(self.steps_doubled)
        exact = "yes" if self.counters_exact else "**no**"
        return [
            self.scenario,
            str(self.committed),
            str(self.recorded),
            str(self.duplicates),
            str(self.lost),
            exact,
            str(self.callbacks_doubled),
            steps,
            str(self.restarted),
        ]

    @property
    def clean(self) -> bool:
        return (
            self.recorded == self.committed
            and self.duplicates == 0
            and self.lost == 0
            and self.counters_exact
            and self.callbacks_doubled == 0
            and self.effects == self.committed
            and not self.steps_doubled
        )


def team() -> Team:
    return Team.objects.create(name="faults")


def write(parent: Team, count: int, start: int = 0, subject: str = "closed") -> int:
    """Commit ``count`` workload transactions; return how many committed (a database
    that goes away mid-burst fails some: those are not counted, and must not appear)."""
    committed = 0
    for number in range(start, start + count):
        try:
            with transaction.atomic():
                Document.objects.create(title=f"fault {number}")
                Ticket.objects.create(subject=f"{subject} {number}", state="closed")
                Player.objects.create(name=f"p{number}", team=parent, points=1)
        except DatabaseError:
            connection.close()  # a restarted server: reconnect at the next statement
            continue
        committed += 1
    return committed


def settled(timeout: float = 120, supervised: Sequence[Worker] = ()) -> int:
    """Wait until nothing is left to do: outbox and queue empty, no task running, no
    handler run due, no counter delta pending, no operation run unfinished.

    Meanwhile, a worker of ``supervised`` that ended by itself is started again, as the
    README asks of production (Celery ends a worker in some broker faults); return how
    many restarts that took.
    """
    restarts = 0

    def supervise() -> None:
        nonlocal restarts
        for worker in supervised:
            if worker.exited():
                worker.restart()
                restarts += 1

    def left() -> dict[str, object]:
        return {
            "outbox": list(Outbox.objects.values_list("id", "relayed_at", "error")),
            "handler runs due": CallbackRun.objects.filter(status="pending").count(),
            "counter deltas": CounterDelta.objects.count(),
            "operation runs": OperationRun.objects.filter(
                status__in=["pending", "running"]
            ).count(),
        }

    try:
        wait_for(
            lambda: supervise() or (not any(left().values()) and quiet()),
            timeout,
            "a quiet system",
        )
    except AssertionError as error:
        raise AssertionError(f"{error} after the fault; left: {left()}") from None
    return restarts


def measure(scenario: str, parent: Team, handler: str = "closed", restarted: int = 0) -> Row:
    """Count what the committed workload left, once the system is quiet (``restarted``:
    the workers :func:`settled` started again)."""
    committed = Document.objects.count()
    creates = Counter(
        AuditEntry.objects.for_model(Document)
        .filter(action="create")
        .values_list("object_pk", flat=True)
    )
    pks = {str(pk) for pk in Document.objects.values_list("pk", flat=True)}
    effects = Counter(Effect.objects.filter(handler=handler).values_list("event_id", flat=True))
    parent.refresh_from_db()
    players = Player.objects.filter(team=parent)
    points = players.aggregate(total=Sum("points"))["total"] or 0
    return Row(
        scenario=scenario,
        committed=committed,
        recorded=sum(creates.values()),
        duplicates=sum(n - 1 for n in creates.values() if n > 1),
        lost=len(pks - set(creates)),
        counters_exact=parent.players_count == players.count() == committed
        and parent.points_total == points
        and Ticket.objects.count() == committed,
        callbacks_doubled=sum(n - 1 for n in effects.values() if n > 1),
        effects=len(effects),
        restarted=restarted,
    )


def write_table(rows: list[Row], seconds: float) -> None:
    """Put this run's table in docs/fault-table.md (one section per database) and, from
    the PostgreSQL pass, in the README's "Guarantees" section (between its markers)."""
    vendor = connection.vendor
    table = "\n".join(
        [
            f"Run of {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, test database "
            f"{vendor}: {len(rows)} scenarios in {seconds:.0f} s.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "| " + " | ".join("---" for _ in COLUMNS) + " |",
            *("| " + " | ".join(row.cells()) + " |" for row in rows),
        ]
    )
    text = TABLE.read_text() if TABLE.exists() else HEADER
    TABLE.write_text(_between(text, f"<!-- {vendor}:begin -->", f"<!-- {vendor}:end -->", table))
    if vendor == "postgresql":
        readme = ROOT / "README.md"
        marks = "<!-- fault-table:begin -->", "<!-- fault-table:end -->"
        readme.write_text(_between(readme.read_text(), *marks, table))


HEADER = """# The fault table

Written by the fault suite (`tests/integration/test_faults.py`, part of `make test`) at
each full run, once per test database; the README's "Guarantees" section holds the
PostgreSQL one. Each scenario is described in the suite's docstrings.

## PostgreSQL

<!-- postgresql:begin -->
<!-- postgresql:end -->

## SQLite

<!-- sqlite:begin -->
<!-- sqlite:end -->
"""


def _between(text: str, begin: str, end: str, inner: str) -> str:
    """``text`` with what stands between the markers ``begin`` and ``end`` replaced."""
    head, found, rest = text.partition(begin)
    if not found:
        raise AssertionError(f"marker {begin} missing")
    _, found, tail = rest.partition(end)
    if not found:
        raise AssertionError(f"marker {end} missing")
    return f"{head}{begin}\n{inner}\n{end}{tail}"


class PrivateCluster:
    """A PostgreSQL cluster of the test's own (initdb, pg_ctl from the server packages),
    on a loopback port, that a test may restart without touching the machine's server."""

    def __init__(self, bindir: Path, datadir: Path, port: int) -> None:
        self.bindir = bindir
        self.datadir = datadir
        self.port = port
        self.url = f"postgres://postgres@127.0.0.1:{port}/auditq"

    @classmethod
    def binaries(cls) -> Path | None:
        """The newest server's bin directory, or ``None`` when none is installed."""
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        return found[-1].parent if found else None

    @classmethod
    def create(cls, bindir: Path, workdir: Path, port: int) -> PrivateCluster:
        cluster = cls(bindir, workdir / "pgdata", port)
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to postgres
            shutil.chown(workdir, "postgres")
        cluster._run("initdb", "-D", str(cluster.datadir), "-U", "postgres", "--auth=trust")
        cluster.start()
        cluster._run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "auditq")
        return cluster

    def _run(self, tool: str, *arguments: str) -> None:
        command = [str(self.bindir / tool), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _ctl(self, action: str, *options: str) -> None:
        server = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off"
        self._run(
            "pg_ctl", action, "-D", str(self.datadir), "-l", str(self.datadir / "log"),
            "-w", "-t", "60", "-o", server, *options,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """Stop at once, as a crash would (``immediate``: no checkpoint, every connection
        cut), and start again."""
        self._ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        self._ctl("stop", "-m", "immediate")  # a throwaway cluster: nothing to keep
