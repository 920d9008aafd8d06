"""Workers on several hosts: ``celery worker`` processes in network namespaces of the
test's own (tests/integration/hosts.py), reaching the broker and PostgreSQL across a
bridge, and one host cut off (its link down) while the others carry on.

The broker is a private redis-server listening on the bridge's address. PostgreSQL listens
on 127.0.0.1 only: the hosts reach it through a forwarder on the bridge's address, so a
cut host's sessions stay open in PostgreSQL, as a real server's would until TCP gives up
(hours, by default). On SQLite the hosts share the database file (namespaces share the
filesystem): a cut takes a host's broker and leaves it the database, the half-cut case.

Where network namespaces cannot be made (not root, no ``ip``, refused), the module skips
and says why.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from auditq.models import OperationRun, StepRun
from tests.conftest import RedisServer, missing, wait_for
from tests.integration import faults, hosts
from tests.testapp import operations as ops
from tests.testapp.models import Effect

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The hosts reach a Redis on the bridge's address; RabbitMQ's delivery is covered by
    # every other real-stack test.
    pytest.mark.parametrize("broker", ["redis"], indirect=True),
]

FAST_SWEEP = {"AUDITQ_TEST_RELAY_AFTER_SECONDS": "2"}  # lost work is re-published after 2 s
# PostgreSQL ends a cut host's session idle in a transaction after 3 s, and with it the
# locks it holds, which would stop the other hosts too: without it, 3 runs of the first
# test in 5 stalled (host a cut between claiming handler runs and committing the claim).
IDLE_LIMIT = {"AUDITQ_TEST_PG_IDLE_SECONDS": "3"}


@pytest.fixture(scope="module")
def network() -> Iterator[hosts.Network]:
    """A bridge and two hosts on it, removed at the end whatever happened."""
    try:
        made = hosts.Network.create()
    except hosts.Unavailable as exc:
        missing(f"workers on several hosts need network namespaces: {exc}")
    try:
        made.host("a")
        made.host("b")
    except hosts.Unavailable as exc:
        made.close()
        missing(f"workers on several hosts need network namespaces: {exc}")
    except BaseException:
        made.close()
        raise
    yield made
    made.close()


@pytest.fixture(scope="module")
def redis_server(network, tmp_path_factory) -> Iterator[RedisServer]:
    """This module's broker (in place of the suite's, on 127.0.0.1): listening on the
    bridge's address, where the hosts reach it."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis-hosts"), host=network.address)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database_env(network) -> dict[str, str]:
    """What a worker on a host needs to reach the test database: on PostgreSQL, the
    forwarder's address; on SQLite nothing (the file is shared)."""
    if connection.vendor != "postgresql":
        return {}
    if shutil.which("socat") is None:
        missing("socat is not installed (the hosts' way to PostgreSQL)")
    found = connection.settings_dict
    port = network.forward(found["HOST"] or "127.0.0.1", int(found["PORT"] or 5432))
    user = quote(found["USER"] or "")
    password = f":{quote(found['PASSWORD'])}" if found["PASSWORD"] else ""
    return {
        "DATABASE_URL": f"postgres://{user}{password}@{network.address}:{port}/{found['NAME']}",
        **IDLE_LIMIT,
    }


@pytest.fixture
def two_hosts(network, broker) -> Iterator[tuple[hosts.Host, hosts.Host]]:
    """The two hosts, both linked, and linked again after the test."""
    for found in network.hosts:
        found.restore()
    yield network.hosts[0], network.hosts[1]
    for found in network.hosts:
        found.restore()


def cut_off(host: hosts.Host, network: hosts.Network, broker) -> None:
    host.cut()
    assert not host.reaches(network.address, broker.port), f"{host.name} still reaches Redis"


def restored(host: hosts.Host, network: hosts.Network, broker) -> None:
    host.restore()
    wait_for(lambda: host.reaches(network.address, broker.port), 30, f"{host.name}'s link")


def steps_ended(worker) -> list[str]:
    """The log lines of ``worker``'s operation steps that ended, with what each returned."""
    lines = Path(worker.log).read_text().splitlines()
    return [line for line in lines if re.search(r"run_operation_step\[.*\] succeeded in", line)]


def test_a_host_cut_off_mid_burst_and_restored_loses_and_doubles_nothing(
    broker, workers, network, database_env, two_hosts
):
    a, b = two_hosts
    parent = faults.team()
    workers(prefix=a.prefix, **database_env, **FAST_SWEEP)
    workers(prefix=b.prefix, **database_env, **FAST_SWEEP)
    faults.write(parent, 40)
    cut_off(a, network, broker)  # whatever it holds: a batch, a handler, a flush, a message
    cut_at = time.monotonic()
    faults.write(parent, 40, start=40)

    # While host a is away, host b does everything, what host a held at the cut included
    # (re-published after 2 s; PostgreSQL ends host a's open transactions after 3 s).
    faults.settled()
    row = faults.measure("a host cut off mid-burst", parent)
    assert row.committed == 80
    assert row.clean, row

    # Host a comes back to find its work done: it doubles nothing, and works again.
    restored(a, network, broker)
    back_at = time.monotonic()
    faults.write(parent, 20, start=80)
    faults.settled()
    settled_at = time.monotonic()
    print(f"host a cut off {back_at - cut_at:.1f} s; settled {settled_at - back_at:.1f} s later")
    row = faults.measure("a host cut off mid-burst, then restored", parent)
    assert row.committed == 100
    assert row.clean, row


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="on SQLite the hosts share one database file, which the cut leaves them: the "
    "cut-off host's step holds SQLite's only write lock until it ends, so no other host "
    "can take it over; leases across hosts run in the PostgreSQL pass",
)
def test_a_cut_off_hosts_step_is_leased_to_another_host_and_completes_once(
    broker, workers, network, database_env, two_hosts, tmp_path, request
):
    a, b = two_hosts
    parent = faults.team()
    stalled, released = tmp_path / "stalled", tmp_path / "released"
    request.addfinalizer(released.touch)  # whatever happens, host a's step ends
    # Host a runs the steps and nothing else (no relay thread): at the cut it holds the
    # slow step's transaction, with the step's effect written in it, and no other lock.
    # No session time limit either: its transaction must outlive the cut.
    holder = workers(
        prefix=a.prefix,
        AUDITQ_TEST_STEP_STALL_FILE=str(stalled),
        AUDITQ_TEST_STEP_RELEASE_FILE=str(released),
        AUDITQ_TEST_RELAY_IN_WORKER="0",
        **{k: v for k, v in database_env.items() if k not in IDLE_LIMIT},
        **FAST_SWEEP,
    )
    run = ops.slow_going.start()  # its lease: 2 s
    wait_for(stalled.exists, 60, "host a to be inside the slow step")
    cut_off(a, network, broker)
    cut_at = time.monotonic()
    workers(prefix=b.prefix, **database_env, **FAST_SWEEP)
    faults.write(parent, 30)

    # The lease expires; host b's relay publishes the run again and b runs the step.
    wait_for(
        lambda: OperationRun.objects.filter(pk=run.pk, status="succeeded").exists(),
        90,
        "host b to take the step over and finish the run",
    )
    print(f"run finished on host b {time.monotonic() - cut_at:.1f} s after the cut")
    restored(a, network, broker)
    released.touch()  # host a's step returns: its lease is gone, its writes roll back
    wait_for(lambda: len(steps_ended(holder)) >= 2, 60, "host a to end its slow step")

    faults.settled()
    row = faults.measure("an operation step on a host cut off mid-step", parent)
    done = Counter(
        Effect.objects.filter(object_pk=str(run.pk), handler__startswith="op:").values_list(
            "handler", flat=True
        )
    )
    row.steps_doubled = sum(n - 1 for n in done.values() if n > 1)
    assert done == {"op:first": 1, "op:slow": 1, "op:second": 1}
    taken = [
        (step.rsplit(".", 1)[1], status, worker.split(":")[0])
        for step, status, worker in StepRun.objects.filter(run=run)
        .order_by("id")
        .values_list("step", "status", "worker")
    ]
    assert taken == [
        ("first", "succeeded", "host-a"),
        ("slow", "failed", "host-a"),  # LeaseExpired, marked by host b
        ("slow", "succeeded", "host-b"),
        ("second", "succeeded", "host-b"),
    ]
    assert StepRun.objects.get(run=run, status="failed").error.startswith("LeaseExpired")
    assert steps_ended(holder)[1].endswith("'lease lost'")  # what host a's attempt returned
    assert row.committed == 30
    assert row.clean, row
