"""Rows no worker can record, on the real stack: set aside, and the burst around them
recorded by a worker process."""

import json

import pytest
from django.db import transaction

from auditq.models import AuditEntry, Outbox
from auditq.stream import events
from auditq.stream.context import AuditContext
from tests.conftest import wait_for
from tests.integration.test_delivery import quiet
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def bad_rows() -> list[Outbox]:
    """A payload of the right version missing its batch, and one whose counter delta
    names a parent this project lacks (the counters consumer refuses it)."""
    change = events.Change(
        "testapp.document", 1, "one", "create", {}, 1.0, AuditContext(), {"audit": 1}
    )
    malformed = json.loads(events.dumps([change]))
    del malformed["batch"]
    refused = events.Change(*change[:7], {"audit": 1, "counters": [["ghost.parent", 1, "n", 1]]})
    return [
        Outbox.objects.create(payload=json.dumps(malformed)),
        Outbox.objects.create(payload=events.dumps([refused])),
    ]


def test_bad_rows_in_the_middle_of_a_burst_are_set_aside_and_the_burst_recorded(broker, workers):
    workers()
    for number in range(20):
        Document.objects.create(title=f"before {number}")
    bad = bad_rows()
    for batch in range(10):
        with transaction.atomic():
            for number in range(3):
                Document.objects.create(title=f"after {batch}-{number}")

    wait_for(
        lambda: AuditEntry.objects.count() >= 50 and quiet(broker),
        60,
        "the burst to be recorded and the system quiet",
    )
    assert AuditEntry.objects.count() == 50
    assert len(set(AuditEntry.objects.values_list("event_id", flat=True))) == 50
    kept = list(Outbox.objects.order_by("id"))
    assert [row.pk for row in kept] == [row.pk for row in bad]
    assert all(row.failed_at is not None for row in kept)
    assert "KeyError: 'batch'" in kept[0].error
    assert "LookupError" in kept[1].error
