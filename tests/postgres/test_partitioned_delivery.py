"""A partitioned trail under real workers: changes whose ``occurred_at`` straddle a month
edge, each delivered several times (the same outbox row published twice, and its payload
committed again once recorded), are recorded exactly once, each in its month's
partition, and their chain verifies."""

import json

import pytest
from django.db import connection
from django.utils import timezone

from auditq import partitions
from auditq.chain import verify
from auditq.delivery.broker import publish
from auditq.models import AuditEntry, Outbox
from tests.conftest import wait_for
from tests.integration.test_delivery import quiet, settle
from tests.postgres.partitioning import partition_of, unconvert
from tests.testapp.models import Document

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

AT = 5
"""Where an event of an outbox payload holds its ``occurred_at`` (a POSIX timestamp)."""


@pytest.fixture
def partitioned_trail(transactional_db):
    """The test database's trail partitioned by month (committed: the workers see it),
    then put back as it was."""
    partitions.convert("month", ahead=1)
    yield
    unconvert()
    assert not partitions.is_partitioned()


def at_edge(row: Outbox, when) -> None:
    """Give the row's one event the time ``when``, as if its web host's clock said so."""
    payload = json.loads(row.payload)
    [event] = payload["events"]
    event[AT] = when.timestamp()  # seconds since the epoch, as the payload holds it
    row.payload = json.dumps(payload)
    row.save(update_fields=["payload"])


def test_redeliveries_either_side_of_a_month_edge_are_recorded_once(
    broker, partitioned_trail, workers
):
    edge = partitions.next_start("month", partitions.period_start("month", timezone.now()))
    just_before = edge - timezone.timedelta(milliseconds=1)
    before = Document.objects.create(title="before the edge")
    after = Document.objects.create(title="after the edge")
    rows = list(Outbox.objects.order_by("id"))
    at_edge(rows[0], just_before)
    at_edge(rows[1], edge)
    for row in rows:
        publish([row.pk])
        publish([row.pk])  # its message sent twice

    workers()
    workers()
    settle(2, workers=workers)
    # Delivered again once recorded: the unique index on (event_id, occurred_at), in
    # each event's own partition, is all that stops them now.
    for row in rows:
        Outbox.objects.create(payload=row.payload, key=row.key)
    wait_for(lambda: not Outbox.objects.exists() and quiet(), 30, "the copies to be consumed")

    entries = {e.object_pk: e for e in AuditEntry.objects.all()}
    assert AuditEntry.objects.count() == 2
    assert entries[str(before.pk)].occurred_at == just_before
    assert entries[str(after.pk)].occurred_at == edge
    assert partition_of(entries[str(before.pk)].pk) == partitions.partition_name(
        "month", partitions.period_start("month", just_before)
    )
    assert partition_of(entries[str(after.pk)].pk) == partitions.partition_name("month", edge)
    assert all(result.intact for result in verify.verify())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT event_id) FROM auditq_auditentry")
        assert cursor.fetchone()[0] == 2
