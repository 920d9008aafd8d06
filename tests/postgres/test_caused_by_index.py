"""On PostgreSQL the entries a change caused are found through a small partial index."""

import uuid

import pytest
from django.db import connection

from auditq.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_the_caused_by_lookup_can_use_its_partial_index():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'auditq_entry_caused_by'")
        [(definition,)] = cursor.fetchall()
        assert "WHERE ((context -> 'caused_by'::text) IS NOT NULL)" in definition
        caused = AuditEntry.objects.filter(context__caused_by=str(uuid.uuid4()))
        sql, params = caused.query.sql_with_params()
        cursor.execute("SET LOCAL enable_seqscan = off")  # the plan it can take, on any size
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "auditq_entry_caused_by" in plan, plan
