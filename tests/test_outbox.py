"""The outbox: one row per transaction, written with the change and never without it."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from auditq.models import AuditEntry, Outbox
from auditq.stream import outbox
from tests.testapp.models import Document, Everything, Plain

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_outbox_row_that_cannot_be_written_rolls_the_change_back(monkeypatch):
    def broken(connection, pendings, *, commit):
        raise TypeError("not serializable")

    monkeypatch.setattr(outbox, "_write", broken)
    with (
        pytest.raises(DatabaseError, match="auditq could not write its outbox row"),
        transaction.atomic(),
    ):
        Document.objects.create(title="never committed")
    monkeypatch.undo()

    assert not Document.objects.exists()
    Document.objects.create(title="the connection still works")
    assert AuditEntry.objects.count() == 1


def test_a_transaction_of_any_size_costs_one_statement_more(undelivered):
    with CaptureQueriesContext(connection) as plain, transaction.atomic():
        Plain.objects.bulk_create([Plain(title="untracked")])  # BEGIN, INSERT, COMMIT
    with CaptureQueriesContext(connection) as tracked, transaction.atomic():
        for number in range(50):
            Document.objects.create(title=str(number))

    statements = [q["sql"] for q in tracked.captured_queries]
    outbox_writes = [s for s in statements if "auditq_outbox" in s]
    assert len(outbox_writes) == 1
    assert len(statements) == 50 + len(plain.captured_queries)
    if connection.vendor == "postgresql":
        # The row travels with the COMMIT: no round trip of its own.
        assert outbox_writes[0].endswith("; COMMIT")
    assert len(Outbox.objects.get().events) == 50


def test_an_update_that_matches_no_row_writes_no_row(undelivered):
    document = Document.objects.create(title="gone soon")
    Document.objects.filter(pk=document.pk).delete()  # behind the instance's back
    Outbox.objects.all().delete()

    document.title = "saved again"
    document.save()  # Django's UPDATE finds nothing, then INSERTs

    [row] = Outbox.objects.all()
    assert [(e.action, e.pk) for e in row.events] == [("create", document.pk)]


def test_a_key_assigned_by_the_database_is_in_the_row_and_its_repr(undelivered):
    thing = Everything.objects.create(slug="numbered")  # __str__ shows the key

    [event] = Outbox.objects.get().events
    assert event.pk == thing.pk
    assert event.changes["id"] == [None, thing.pk]
    assert event.repr == f"everything {thing.pk}"


def test_a_lone_delete_is_one_statement_like_an_untracked_model(undelivered):
    thing = Everything.objects.create(slug="doomed")
    Outbox.objects.all().delete()

    with CaptureQueriesContext(connection) as queries:
        assert thing.delete() == (1, {"testapp.Everything": 1})

    statements = [q["sql"] for q in queries.captured_queries]
    deletes = [s for s in statements if s.startswith('DELETE FROM "testapp_everything"')]
    assert len(deletes) == 1
    if connection.vendor == "postgresql":
        assert statements == deletes  # no BEGIN, no COMMIT: the DELETE writes its row
    assert thing.pk is None
    [event] = Outbox.objects.get().events
    assert (event.action, event.changes["slug"]) == ("delete", ["doomed", None])


def test_a_delete_that_finds_no_row_writes_no_row(undelivered):
    thing = Everything.objects.create(slug="twice")
    Everything.objects.filter(pk=thing.pk).delete()
    Outbox.objects.all().delete()

    assert thing.delete() == (0, {"testapp.Everything": 0})
    assert not Outbox.objects.exists()
