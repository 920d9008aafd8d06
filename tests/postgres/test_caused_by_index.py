"""On PostgreSQL the entries a change caused are found through a small partial index."""

import uuid

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone

from auditq.models import AuditEntry
from tests.testapp.models import Account

pytestmark = pytest.mark.django_db


def test_the_admins_caused_by_lookup_uses_its_partial_index():
    account_type = ContentType.objects.get_for_model(Account)
    cause = str(uuid.uuid4())
    AuditEntry.objects.bulk_create(
        AuditEntry(
            event_id=uuid.uuid4(),
            content_type=account_type,
            object_pk=str(n),
            action="create",
            context={"caused_by": cause} if n < 2 else {"reason": "import"},
            occurred_at=timezone.now(),
        )
        for n in range(2000)
    )
    caused = AuditEntry.objects.filter(context__caused_by=cause).order_by("occurred_at", "id")
    sql, params = caused[:50].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'auditq_entry_caused_by'")
        [(definition,)] = cursor.fetchall()
        cursor.execute("ANALYZE auditq_auditentry")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "WHERE ((context -> 'caused_by'::text) IS NOT NULL)" in definition
    assert "auditq_entry_caused_by" in plan, plan
    assert len(caused) == 2
