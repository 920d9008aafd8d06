"""Workers' heartbeats: what the dashboard and the trail's banner read instead of a ping."""

import datetime
import threading

import pytest
from django.utils import timezone

from auditq.delivery import heartbeat, worker
from auditq.models import WorkerHeartbeat
from tests.celery_app import app as celery_app
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def rows() -> dict[str, datetime.datetime]:
    return dict(WorkerHeartbeat.objects.values_list("name", "seen_at"))


def test_a_beat_updates_the_workers_one_row():
    then = timezone.now() - datetime.timedelta(seconds=10)
    heartbeat.beat("w1@host", then)
    heartbeat.beat("w1@host")

    [(name, seen_at)] = rows().items()
    assert name == "w1@host" and seen_at > then


def test_only_recent_heartbeats_are_alive_and_old_rows_are_forgotten():
    now = timezone.now()
    heartbeat.beat("fresh@host", now)
    heartbeat.beat("late@host", now - heartbeat.ALIVE_WITHIN - datetime.timedelta(seconds=1))
    heartbeat.beat("dead@host", now - heartbeat.FORGET_AFTER - datetime.timedelta(seconds=1))

    assert heartbeat.alive(now) == [("fresh@host", now)]
    heartbeat.forget(older_than=heartbeat.FORGET_AFTER)
    assert sorted(rows()) == ["fresh@host", "late@host"]


def test_the_worker_beats_while_it_runs_and_its_row_goes_when_it_stops(settings):
    # Relaying off: a worker that only runs tasks records changes too, so it beats.
    settings.AUDITQ = {**settings.AUDITQ, "RELAY_IN_WORKER": False}
    worker.start_in_worker(celery_app, "celery@node1")
    try:
        assert "auditq-heartbeat" in [t.name for t in threading.enumerate()]
        wait_for(lambda: "celery@node1" in rows(), 10, "the first heartbeat")
        assert [name for name, _ in heartbeat.alive()] == ["celery@node1"]
    finally:
        worker.stop_in_worker()
    assert "auditq-heartbeat" not in [t.name for t in threading.enumerate()]
    assert rows() == {}


def test_a_worker_without_a_node_name_beats_as_pid_at_host():
    beat = heartbeat.Heartbeat()

    assert beat.name == heartbeat.default_name()
    assert beat.name.split("@")[0].isdigit()
