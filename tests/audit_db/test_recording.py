"""Recording and reading the trail when it lives in a database of its own: entries in
the audit database with its content types; the outbox, callback runs and counters with
the writes; time travel, revert and diffs read each table where it is. Tasks run eagerly
here; tests/audit_db/test_workers.py runs worker processes."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.testapp.models import Document, Effect, Player, Tag, Team, Ticket

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "audit"])


def test_entries_land_in_the_audit_database_with_its_content_types():
    with transaction.atomic():
        document = Document.objects.create(title="draft")
        document.title = "final"
        document.save()
    document.delete()

    entries = list(AuditEntry.objects.order_by("id"))

    assert [e.action for e in entries] == ["create", "delete"]  # squashed, then a delete
    assert {e._state.db for e in entries} == {"audit"}
    audit_type = ContentType.objects.db_manager("audit").get_for_model(Document)
    assert {e.content_type_id for e in entries} == {audit_type.pk}
    assert entries[0].changes["title"] == [None, "final"]
    assert entries[0].object_repr == "final"
    assert not Outbox.objects.exists()


def test_handlers_and_counters_commit_in_the_writers_database():
    ticket = Ticket.objects.create(subject="printer")
    ticket.state = "closed"
    ticket.save()
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team)

    [run] = CallbackRun.objects.using("default").filter(object_pk=str(ticket.pk))
    assert run.status == "succeeded"
    assert Effect.objects.filter(handler="closed", object_pk=str(ticket.pk)).count() == 1
    team.refresh_from_db()
    assert team.players_count == 1


def test_time_travel_and_field_history_read_the_audit_database():
    document = Document.objects.create(title="first")
    created = timezone.now()
    document.title = "second"
    document.save()

    assert AuditEntry.objects.as_of(document, created)["title"] == "first"
    history = AuditEntry.objects.field_history(document, "title")
    assert [(old, new) for _, _, old, new in history] == [(None, "first"), ("first", "second")]


def test_revert_writes_the_object_and_records_the_revert_in_the_audit_database():
    document = Document.objects.create(title="first")
    document.title = "second"
    document.save()
    update = AuditEntry.objects.for_object(document).get(action="update")

    update.revert()

    document.refresh_from_db()
    assert document.title == "first"
    last = AuditEntry.objects.for_object(document).last()
    assert last.context["reverted"] == update.pk
    assert last.changes == {"title": ["second", "first"]}


def test_a_diff_names_related_objects_from_the_writers_database():
    document = Document.objects.create(title="tagged")
    document.tags.add(Tag.objects.create(name="urgent"))
    entry = AuditEntry.objects.for_object(document).get(action="update")

    [row] = entry.get_diff_display()

    assert [related.label for related in row.new.related] == ["urgent"]
    assert entry.summary.startswith("Document #")
