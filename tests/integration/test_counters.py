"""Counter caches against Redis and real ``celery worker`` processes."""

import signal
import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from auditq.delivery.broker import publish
from auditq.models import CounterDelta, Outbox
from tests.conftest import QUEUE, ROOT, wait_for
from tests.integration.counter_churn import churn
from tests.testapp.models import Player, Team

pytestmark = pytest.mark.django_db(transaction=True)


def quiet(broker) -> bool:
    """Nothing left anywhere: no outbox row, no message queued, no delta waiting."""
    return (
        not Outbox.objects.exists()
        and broker.depth(QUEUE) == 0
        and not CounterDelta.objects.exists()
    )


def truth(team: Team) -> tuple[int, int, Decimal]:
    players = list(Player.objects.filter(team=team))
    active = [p for p in players if p.active]
    return len(players), len(active), sum((p.points for p in active), Decimal("0.00"))


def assert_exact(teams: list[Team]) -> None:
    for team in teams:
        team.refresh_from_db()
        stored = (team.players_count, team.active_count, team.points_total)
        assert stored == truth(team), team.name


def in_threads(count: int, steps: int, team_ids: list[int]) -> None:
    errors = []

    def run(seed: int) -> None:
        try:
            churn(seed, steps, team_ids)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


@pytest.mark.parametrize("count", [2, 4])
def test_every_kind_of_change_from_threads_and_processes_ends_exact(broker, workers, count):
    teams = [Team.objects.create(name=f"team {n}") for n in range(3)]
    ids = [team.pk for team in teams]
    first, *_ = [workers() for _ in range(count)]
    other = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/integration/counter_churn.py"),
            "99",
            "60",
            *map(str, ids),
        ],
        cwd=ROOT,
        env=first.env,
    )
    in_threads(3, 60, ids)
    assert other.wait(120) == 0

    wait_for(lambda: quiet(broker), 60, "the changes to be recorded and flushed")
    assert Player.objects.exists()
    assert_exact(teams)


def test_every_message_delivered_twice_changes_nothing(broker, workers):
    teams = [Team.objects.create(name=f"team {n}") for n in range(2)]
    churn(7, 40, [team.pk for team in teams])  # no worker runs yet
    rows = list(Outbox.objects.values_list("id", flat=True))
    assert len(rows) >= 20
    for row in rows:  # every row published twice, one message each
        publish([row])
        publish([row])
    assert broker.depth(QUEUE) == 2 * len(rows)

    workers()
    workers()
    wait_for(lambda: quiet(broker), 60, "both copies of every message")
    assert_exact(teams)


def test_a_worker_killed_mid_flush_loses_and_doubles_nothing(broker, workers, tmp_path):
    team = Team.objects.create(name="hot")
    stalled = tmp_path / "stalled"
    table = connection.ops.quote_name(Team._meta.db_table).strip('"')
    doomed = workers(AUDITQ_TEST_STALL_FILE=str(stalled), AUDITQ_TEST_STALL_ON=f"UPDATE {table}")
    for number in range(30):
        Player.objects.create(name=str(number), team=team, points=Decimal("1.00"))

    wait_for(stalled.exists, 30, "the worker to start its flush")
    doomed.kill(signal.SIGKILL)
    assert not Outbox.objects.exists()
    assert CounterDelta.objects.exists()  # the flush died with the worker: deltas are back
    team.refresh_from_db()
    assert team.players_count < 30

    workers()  # its relay's sweep flushes what was left
    wait_for(lambda: quiet(broker), 60, "the deltas to be flushed again")
    assert_exact([team])
    assert team.players_count == 30


def test_recount_repairs_raw_sql_damage_while_writes_continue(broker, workers):
    teams = [Team.objects.create(name=f"team {n}") for n in range(2)]
    ids = [team.pk for team in teams]
    workers()
    workers()
    churn(1, 20, ids)
    wait_for(lambda: quiet(broker), 60, "the first changes")
    with connection.cursor() as cursor:  # a fix-up script gone wrong
        cursor.execute(f"UPDATE {Team._meta.db_table} SET players_count = -5, points_total = 0")

    writer = threading.Thread(target=churn, args=(2, 60, ids))
    writer.start()
    while writer.is_alive():  # deltas are in flight during every recount
        call_command("auditq_recount", "testapp.Team", "--batch-size", "1", verbosity=0)
    writer.join()
    call_command("auditq_recount", "testapp.Team", verbosity=0)

    wait_for(lambda: quiet(broker), 60, "the last changes and corrections")
    assert_exact(teams)
