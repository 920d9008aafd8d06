"""PostgreSQL wakes the workers' relay when a commit comes while it waits (LISTEN/NOTIFY),
with no polling: only the first commit after the relay went idle notifies, and none while
it is busy; with ``AUDITQ["NOTIFY"]`` off, commits notify nobody and the relay polls."""

import signal
import time

import psycopg
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from auditq.backends.postgresql import PostgreSQLBackend
from auditq.models import AuditEntry, Outbox
from tests.conftest import wait_for
from tests.integration.test_delivery import settle
from tests.testapp.models import Document

QUIET = {**settings.AUDITQ, "NOTIFY": False}

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


WANT = "SELECT setval('auditq_relay_idle', 1, false) FROM auditq_relay_idle WHERE is_called"
"""What an idle relay says last on its listening connection before it sleeps."""


def listening_since(started) -> bool:
    """Whether a connection opened since ``started`` waits for commits: a relay that has
    done its rounds, asked for a notification and sleeps until a commit or its poll."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query = %s AND state = 'idle' AND backend_start >= %s",
            [WANT, started],
        )
        return cursor.fetchone()[0] > 0 and relay_waits()


def relay_waits() -> bool:
    """Whether the next commit that writes an outbox row will notify."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT NOT is_called FROM auditq_relay_idle")
        return cursor.fetchone()[0]


def open_listener():
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    listener = psycopg.connect(**params, autocommit=True)
    listener.execute("LISTEN auditq_outbox")
    return listener


def heard_before_the_end(listener) -> list[str]:
    """The payloads of the outbox's notifications up to an ``end`` the test sends now:
    notifications arrive in commit order, so every commit before it has been heard."""
    with connection.cursor() as cursor:
        cursor.execute("NOTIFY auditq_outbox, 'end'")
    heard = []
    for notify in listener.notifies(timeout=20):
        if notify.payload == "end":
            return heard
        heard.append(notify.payload)
    raise AssertionError(f"the end marker never arrived; heard {heard}")


def test_a_commit_wakes_the_relay_without_waiting_for_its_poll(broker, workers):
    """PostgreSQL notifies the workers' relay at each commit; elsewhere it polls."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [started] = cursor.fetchone()
    workers(AUDITQ_TEST_RELAY_POLL_SECONDS="60")
    wait_for(lambda: listening_since(started), 20, "the relay to listen")

    committed = time.monotonic()
    Document.objects.create(title="wake up")
    wait_for(AuditEntry.objects.exists, 30, "the change to be recorded")
    took = time.monotonic() - committed
    [entry] = settle(1, timeout=30, workers=workers)  # and nothing more once quiet

    assert entry.object_repr == "wake up"
    # Well under the 60 s poll: only the notification can have woken the relay.
    assert took < 10, f"recorded {took:.1f} s after the commit"


def test_the_relay_wakes_again_each_time_it_idled(broker, workers):
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [started] = cursor.fetchone()
    workers(AUDITQ_TEST_RELAY_POLL_SECONDS="60")

    for number in range(1, 4):
        wait_for(lambda: listening_since(started), 20, "the relay to wait for a commit")
        Document.objects.create(title=f"wake up {number}")
        # Recorded well before the 60 s poll: the commit's notification woke the relay.
        entries = settle(number, timeout=30, workers=workers)
        assert [e.object_repr for e in entries][-1] == f"wake up {number}"


def test_only_the_first_commit_after_the_relay_asked_notifies(undelivered):
    with open_listener() as listener:
        PostgreSQLBackend().want_notify(listener)
        Document.objects.create(title="first: notifies")
        Document.objects.create(title="second: the relay is awake")
        with transaction.atomic():
            Document.objects.create(title="third, in a transaction")
        PostgreSQLBackend().want_notify(listener)
        with transaction.atomic():
            Document.objects.create(title="first after the relay asked again")

        assert heard_before_the_end(listener) == ["", ""]
    assert Outbox.objects.count() == 4


def test_commits_while_the_relay_is_busy_do_not_notify(broker, workers, tmp_path):
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [started] = cursor.fetchone()
    stalled = tmp_path / "stalled"
    busy = workers(AUDITQ_TEST_STALL_FILE=str(stalled), AUDITQ_TEST_RELAY_POLL_SECONDS="60")
    wait_for(lambda: listening_since(started), 20, "the relay to wait for a commit")
    Document.objects.create(title="wakes the relay")
    wait_for(stalled.exists, 30, "the relay to start recording")  # and stay busy

    with open_listener() as listener:
        for number in range(10):
            Document.objects.create(title=f"lone save {number}")
            with transaction.atomic():
                Document.objects.create(title=f"in a transaction {number}")
        assert heard_before_the_end(listener) == []
    assert not relay_waits()

    # Nothing lost: another worker's relay records every change, once.
    busy.kill(signal.SIGKILL)
    workers()
    entries = settle(21, timeout=60, workers=workers)
    assert len({entry.event_id for entry in entries}) == 21
    assert AuditEntry.objects.count() == 21


def test_with_notify_off_no_commit_notifies(undelivered):
    with open_listener() as listener:
        PostgreSQLBackend().want_notify(listener)  # as an idle relay does
        with override_settings(AUDITQ=QUIET):
            Document.objects.create(title="lone save")  # the statement writes the row
            with transaction.atomic():  # the row goes with the COMMIT
                Document.objects.create(title="in a transaction")
        Document.objects.create(title="marker")  # notifies: NOTIFY is on again

        # Notifications arrive in commit order: had the first two commits notified, their
        # notifications would come before the marker's.
        heard = [n.channel for n in listener.notifies(timeout=10, stop_after=1)]
        heard += [n.channel for n in listener.notifies(timeout=0)]

    assert heard == ["auditq_outbox"]
    assert Outbox.objects.count() == 3


def test_with_notify_off_the_relay_records_at_its_poll(broker, workers):
    workers(AUDITQ_TEST_NOTIFY="0", AUDITQ_TEST_RELAY_POLL_SECONDS="0.2")
    with override_settings(AUDITQ=QUIET):
        Document.objects.create(title="polled")

    [entry] = settle(1, timeout=20, workers=workers)
    assert entry.object_repr == "polled"
