"""PostgreSQL wakes the workers' relay at each commit (LISTEN/NOTIFY), with no polling;
with ``AUDITQ["NOTIFY"]`` off, commits notify nobody and the relay polls."""

import time

import psycopg
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from auditq.models import AuditEntry, Outbox
from tests.conftest import wait_for
from tests.integration.test_delivery import settle
from tests.testapp.models import Document

QUIET = {**settings.AUDITQ, "NOTIFY": False}

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def listening_since(started) -> bool:
    """Whether a connection opened since ``started`` waits for commits: a relay that has
    done its first round (it listens only then) and sleeps until a commit or its poll."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query = 'LISTEN auditq_outbox' AND backend_start >= %s",
            [started],
        )
        return cursor.fetchone()[0] > 0


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


def test_with_notify_off_no_commit_notifies(undelivered):
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute("LISTEN auditq_outbox")
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
