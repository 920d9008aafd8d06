"""PostgreSQL wakes the workers' relay at each commit (LISTEN/NOTIFY), with no polling."""

import time

import pytest

from tests.integration.test_delivery import settle
from tests.testapp.models import Document

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_a_commit_wakes_the_relay_without_waiting_for_its_poll(broker, workers):
    """PostgreSQL notifies the workers' relay at each commit; elsewhere it polls."""
    workers(AUDITQ_TEST_RELAY_POLL_SECONDS="60")
    time.sleep(0.5)  # let the relay finish its first round and start waiting
    Document.objects.create(title="wake up")
    # Well under the 60 s poll: only the notification can have woken the relay.
    settle(1, timeout=20, workers=workers)
