"""``auditq.routers.AuditRouter``: the entries in ``AUDITQ["DATABASE"]``, every other table
of auditq with the audited models' writes."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connections, router
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditq.delivery import relay
from auditq.models import (
    AuditEntry,
    CallbackRun,
    CounterDelta,
    OperationRun,
    Outbox,
    StepRun,
    WorkerHeartbeat,
)
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "audit"])

WRITER_SIDE = [Outbox, CallbackRun, CounterDelta, OperationRun, StepRun, WorkerHeartbeat]


def tables(alias: str) -> set[str]:
    with connections[alias].cursor() as cursor:
        return set(connections[alias].introspection.table_names(cursor))


def test_entries_are_read_and_written_in_the_audit_database():
    assert router.db_for_read(AuditEntry) == router.db_for_write(AuditEntry) == "audit"
    assert AuditEntry.objects.all().db == "audit"


@pytest.mark.parametrize("model", WRITER_SIDE, ids=lambda m: m.__name__)
def test_the_outbox_ledgers_and_runs_stay_with_the_writes(model):
    assert router.db_for_read(model) == router.db_for_write(model) == "default"
    assert router.allow_migrate_model("default", model)
    assert not router.allow_migrate_model("audit", model)


def test_migrate_puts_each_table_in_its_database():
    audit, default = tables("audit"), tables("default")

    assert AuditEntry._meta.db_table in audit
    assert AuditEntry._meta.db_table not in default
    for model in WRITER_SIDE:
        assert model._meta.db_table in default
        assert model._meta.db_table not in audit
    assert ContentType._meta.db_table in audit  # the entries point at its rows


def test_no_relay_starts_on_the_audit_database():
    assert relay.outbox_databases() == ["default"]


def test_an_entrys_actor_is_read_where_users_are():
    user = get_user_model().objects.create(username="ada")
    document = Document.objects.create(title="draft", author=user)
    entry = AuditEntry.objects.create(
        event_id="00000000-0000-0000-0000-000000000001",
        content_type=ContentType.objects.db_manager("audit").get_for_model(Document),
        object_pk=str(document.pk),
        action="create",
        actor=user,  # a user of the default database, kept by key
        actor_repr="ada",
        occurred_at=timezone.now(),
    )

    found = AuditEntry.objects.get(pk=entry.pk)

    assert found._state.db == "audit"
    assert found.actor == user  # not looked up beside the entry, where no user exists
    assert not get_user_model().objects.using("audit").exists()
    assert found.content_type.model_class() is Document


def test_an_entry_takes_only_the_audit_databases_content_types():
    wrong = ContentType.objects.get_for_model(Document)  # the default database's
    right = ContentType.objects.db_manager("audit").get_for_model(Document)
    entry = AuditEntry.objects.db_manager("audit").get(pk=_entry_of(right).pk)

    assert right.pk != wrong.pk  # tests/audit_db/conftest.py: keys of their own
    with pytest.raises(ValueError, match="database"):
        entry.content_type = wrong
    entry.content_type = right


def _entry_of(content_type: ContentType) -> AuditEntry:
    return AuditEntry.objects.create(
        event_id="00000000-0000-0000-0000-000000000002",
        content_type=content_type,
        object_pk="1",
        action="create",
        occurred_at=timezone.now(),
    )


def test_the_entries_indexes_are_built_where_the_entries_are():
    with connections["audit"].cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'auditq_auditentry'")
        indexes = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT count(*) FROM pg_proc WHERE proname = 'auditq_outbox_put'")
        [(functions,)] = cursor.fetchall()

    # Migrations 0003 and 0012 (trigram search, caused_by); 0002's outbox function is not.
    assert {"auditq_entry_repr_trgm", "auditq_entry_caused_by"} <= indexes
    assert functions == 0


def test_the_operation_runs_check_skips_the_audit_database():
    from auditq.checks import check_operation_steps

    with CaptureQueriesContext(connections["audit"]) as queries:
        assert check_operation_steps(databases=["audit"]) == []
    assert not queries.captured_queries
