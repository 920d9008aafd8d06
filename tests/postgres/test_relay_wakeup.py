"""PostgreSQL wakes the workers' relay at each commit (LISTEN/NOTIFY), with no polling;
with ``AUDITQ["NOTIFY"]`` off, commits notify nobody and the relay polls."""

import psycopg
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from auditq.models import Outbox
from tests.conftest import wait_for
from tests.integration.test_delivery import settle
from tests.testapp.models import Document

QUIET = {**settings.AUDITQ, "NOTIFY": False}

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def listening() -> bool:
    """Whether a relay has run ``LISTEN`` (its connection's last statement): from then on
    the server queues each commit's notification for it, whether or not it waits yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN auditq_outbox'"
        )
        return cursor.fetchone()[0] > 0


def test_a_commit_wakes_the_relay_without_waiting_for_its_poll(broker, workers):
    """PostgreSQL notifies the workers' relay at each commit; elsewhere it polls."""
    workers(AUDITQ_TEST_RELAY_POLL_SECONDS="60")
    # Its first round done, the relay listens: a commit before that would wait a poll.
    wait_for(listening, 30, "the relay to listen")
    Document.objects.create(title="wake up")
    # Well under the 60 s poll: only the notification can have woken the relay.
    settle(1, timeout=20, workers=workers)


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
