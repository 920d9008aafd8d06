"""The fault table: the faults production sees, on the real stack (a private Redis on a
loopback port, ``celery worker`` processes, the test database), each bounded in time.

After each fault the system is left to become quiet; then every committed change must be
recorded exactly once, every counter exact, no handler effect doubled and no operation
step completed twice. The run writes docs/fault-table.md (README "Guarantees")."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from kombu import messaging

from auditq.delivery import relay
from auditq.models import CallbackRun, Outbox
from tests.conftest import ROOT, _free_port, missing, wait_for
from tests.integration import faults
from tests.testapp import operations as ops
from tests.testapp.models import Effect

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The table's faults are Redis's (stopped, restarted without its data); RabbitMQ's
    # delivery is covered by every other real-stack test, which runs on both brokers.
    pytest.mark.parametrize("broker", ["redis"], indirect=True),
]

ROWS: dict[str, faults.Row] = {}
ORDER = [
    "Redis stopped during a burst",
    "Redis restarted with its data lost",
    "a worker SIGKILLed mid-batch, 4 times",
    "two workers at once",
    "four workers at once",
    "every message published three times",
    "the relay killed between claiming and publishing",
    "a handler that fails twice, then succeeds",
    "an operation step whose worker dies mid-step",
    "PostgreSQL restarted while workers record, twice",
]
FAST_SWEEP = {"AUDITQ_TEST_RELAY_AFTER_SECONDS": "2"}  # lost work is re-published after 2 s


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[None]:
    """Write the table once every scenario ran (not after a partial run: ``-k``, ``-x``)."""
    started = time.monotonic()
    yield
    expected = set(ORDER) if connection.vendor == "postgresql" else set(ORDER[:-1])
    if set(ROWS) == expected:
        rows = [ROWS[name] for name in ORDER if name in ROWS]
        faults.write_table(rows, time.monotonic() - started)


def check(row: faults.Row) -> None:
    ROWS[row.scenario] = row
    assert row.committed > 0
    assert row.clean, row


def test_redis_stopped_during_a_burst(broker, workers):
    parent = faults.team()
    workers(**FAST_SWEEP)
    faults.write(parent, 40)
    broker.stop()
    faults.write(parent, 40, start=40)  # saves go on while the broker is down
    broker.start()
    faults.write(parent, 20, start=80)

    restarted = faults.settled(supervised=workers.started)
    check(faults.measure(ORDER[0], parent, restarted=restarted))


def test_redis_restarted_with_its_data_lost(broker, workers):
    parent = faults.team()
    faults.write(parent, 50)
    assert relay.relay(older_than=0) > 0  # every row published, no worker to take them
    broker.stop()  # no persistence: the messages are gone, the rows stay claimed
    broker.start()
    workers(**FAST_SWEEP)
    faults.write(parent, 30, start=50)
    broker.stop()  # again while the workers record and run handlers
    broker.start()
    faults.write(parent, 20, start=80)

    restarted = faults.settled(supervised=workers.started)
    check(faults.measure(ORDER[1], parent, restarted=restarted))


def test_a_worker_sigkilled_mid_batch_repeatedly(broker, workers):
    parent = faults.team()
    workers(**FAST_SWEEP)
    for round_ in range(4):
        doomed = workers(**FAST_SWEEP)
        faults.write(parent, 30, start=round_ * 30)
        doomed.kill(signal.SIGKILL)  # whatever it held: a batch, a handler, a flush
    workers(**FAST_SWEEP)

    restarted = faults.settled(supervised=workers.started)
    check(faults.measure(ORDER[2], parent, restarted=restarted))


@pytest.mark.parametrize("count", [2, 4])
def test_several_workers_at_once(broker, workers, count):
    parent = faults.team()
    for _ in range(count):
        workers(**FAST_SWEEP)
    faults.write(parent, 100)

    restarted = faults.settled(supervised=workers.started)
    check(faults.measure(ORDER[3] if count == 2 else ORDER[4], parent, restarted=restarted))


def test_every_message_published_three_times(broker, workers, monkeypatch):
    parent = faults.team()
    thrice = {"AUDITQ_TEST_PUBLISH_TIMES": "3", "AUDITQ_TEST_RELAY_IN_WORKER": "0"}
    workers(**thrice)
    workers(**thrice)
    publish = messaging.Producer.publish

    def three_times(self, *args, **kwargs):
        publish(self, *args, **kwargs)
        publish(self, *args, **kwargs)
        return publish(self, *args, **kwargs)

    monkeypatch.setattr(messaging.Producer, "publish", three_times)
    for batch in range(8):
        faults.write(parent, 10, start=batch * 10)
        relay.relay(older_than=0)  # the only publisher of deliveries here
    monkeypatch.undo()

    restarted = faults.settled(supervised=workers.started)
    check(faults.measure(ORDER[5], parent, restarted=restarted))


def test_the_relay_killed_between_claiming_and_publishing(broker, workers, tmp_path):
    parent = faults.team()
    faults.write(parent, 60)
    stalled = tmp_path / "claimed"
    doomed = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/integration/fault_relay.py"), str(stalled)],
        cwd=ROOT,
        env=workers_env(workers, broker),
    )
    try:
        wait_for(stalled.exists, 60, "the relay to claim the rows")
    finally:
        doomed.kill()
        doomed.wait(30)
    assert Outbox.objects.filter(relayed_at__isnull=False).count() == 60  # claimed, unsent
    workers(**FAST_SWEEP)  # its relay publishes them again once the claim is stale

    restarted = faults.settled(supervised=workers.started)
    check(faults.measure(ORDER[6], parent, restarted=restarted))


def workers_env(workers, broker) -> dict[str, str]:
    """The environment a worker process of this test gets (its database, the broker)."""
    from tests.conftest import Worker

    return Worker(broker.url, ROOT).env


def test_a_handler_that_fails_twice_then_succeeds(broker, workers):
    parent = faults.team()
    workers(**FAST_SWEEP)
    workers(**FAST_SWEEP)
    faults.write(parent, 30, subject="flaky")

    restarted = faults.settled(supervised=workers.started)
    row = faults.measure(ORDER[7], parent, handler="flaky", restarted=restarted)
    runs = CallbackRun.objects.filter(handler="tests.testapp.handlers.flaky")
    assert runs.count() == row.committed
    assert set(runs.values_list("status", "attempts")) == {("succeeded", 3)}  # failed twice
    check(row)


def test_an_operation_step_whose_worker_dies_mid_step(broker, workers, tmp_path):
    parent = faults.team()
    stall = tmp_path / "stalled"
    doomed = workers(AUDITQ_TEST_STEP_STALL_FILE=str(stall), **FAST_SWEEP)
    faults.write(parent, 30)
    # Started after the burst: on SQLite the stalled step's open transaction holds the
    # database's write lock until its worker dies, and the burst would wait on it.
    run = ops.slow_going.start()
    wait_for(stall.exists, 60, "the worker to be inside the slow step")
    doomed.kill(signal.SIGKILL)
    workers(**FAST_SWEEP)  # the run's lease (2 s) expires: this worker takes it on
    faults.write(parent, 30, start=30)

    restarted = faults.settled(supervised=workers.started)
    row = faults.measure(ORDER[8], parent, restarted=restarted)
    done = Counter(
        Effect.objects.filter(object_pk=str(run.pk), handler__startswith="op:").values_list(
            "handler", flat=True
        )
    )
    run.refresh_from_db()
    assert run.status == "succeeded"
    # "slow" wrote its effect, then its worker died: that step's transaction rolled back,
    # so the effect a step commits is there once for every step.
    row.steps_doubled = sum(n - 1 for n in done.values() if n > 1)
    assert set(done) == {"op:first", "op:slow", "op:second"}
    check(row)


@pytest.fixture
def private_postgres() -> Iterator[faults.PrivateCluster]:
    """A PostgreSQL cluster the test may restart: not the machine's server."""
    bindir = faults.PrivateCluster.binaries()
    if bindir is None:
        missing("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not under pytest's temporary directory: its owner alone may enter it, and the
    # cluster belongs to postgres when the tests run as root.
    workdir = Path(tempfile.mkdtemp(prefix="auditq-cluster-"))
    cluster = faults.PrivateCluster.create(bindir, workdir, _free_port())
    yield cluster
    cluster.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="its private cluster does not depend on the test database: run once, in the "
    "PostgreSQL pass",
)
def test_postgresql_restarted_while_workers_record(broker, private_postgres, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    cluster = private_postgres
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/integration/fault_postgres.py"),
            str(cluster.bindir),
            str(cluster.datadir),
            str(cluster.port),
            broker.url,
            str(logdir),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=420,
    )
    logs = "\n".join(path.read_text()[-3000:] for path in logdir.glob("*.log"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:] + logs
    row = faults.Row(**json.loads(done.stdout.splitlines()[-1]))
    check(row)
