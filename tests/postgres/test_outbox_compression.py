"""On PostgreSQL the outbox's payloads are compressed with lz4 (migration 0019): a bulk
write's long payload is stored that way, and reads back whole."""

import pytest
from django.db import connection

from auditq.models import Outbox
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_bulk_writes_payload_is_stored_lz4_compressed_and_reads_back_whole(undelivered):
    Document.objects.bulk_create([Document(title=f"document {i}") for i in range(300)])

    Document.objects.update(status="live")

    row = Outbox.objects.order_by("id").last()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(payload) FROM auditq_outbox WHERE id = %s", [row.pk]
        )
        assert cursor.fetchone() == ("lz4",)
    changes = [event.changes for event in row.events]
    assert changes == [{"status": ["draft", "live"]}] * 300
