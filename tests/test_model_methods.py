"""A model's own methods run as written, and what the database decides is recorded as it
decided it: auditq wraps ``save_base``, ``delete``, ``from_db`` and ``refresh_from_db``
and never stands in for a user's override of any of them."""

from contextlib import nullcontext

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import connection, models, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from auditq.models import AuditEntry
from tests.helpers import only_entry, trail
from tests.shapesapp.models import Attachment, Counted, Keepsake, Note, Sealed, Stamped
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_wrapped_methods_are_djangos_own_or_call_the_models_own():
    # Only Django's own delete() is ever replaced by auditq's one-statement path.
    assert Document.delete is not models.Model.delete
    for model in (Keepsake, Sealed, Attachment):
        assert model.delete.__qualname__ != "_guard_delete.<locals>.guarded", model


# --------------------------------------------------------------------------- delete() overrides


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_soft_delete_keeps_the_row_and_records_the_update_it_made(in_transaction):
    item = Keepsake.all_objects.create(name="x")
    item = Keepsake.all_objects.get(pk=item.pk)

    with transaction.atomic() if in_transaction else nullcontext():
        item.delete()

    assert item.pk is not None
    assert Keepsake.all_objects.values_list("is_removed", flat=True).get(pk=item.pk) is True
    assert [(e.action, e.changes) for e in trail(item)][1:] == [
        ("update", {"is_removed": [False, True]})
    ]


def test_a_delete_that_refuses_keeps_the_row_and_records_nothing():
    sealed = Sealed.objects.create(name="kept")

    with pytest.raises(PermissionDenied):
        sealed.delete()

    assert Sealed.objects.filter(pk=sealed.pk).exists()
    assert [e.action for e in trail(sealed)] == ["create"]


def test_a_delete_that_calls_super_then_removes_its_file_does_both(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    attachment = Attachment(upload=None)
    attachment.upload.save("report.txt", ContentFile(b"numbers"), save=False)
    attachment.save()
    pk, path = attachment.pk, tmp_path / attachment.upload.name
    assert path.exists()

    attachment.delete()

    assert not Attachment.objects.filter(pk=pk).exists()
    assert not path.exists()
    [deleted] = AuditEntry.objects.for_model(Attachment).filter(object_pk=str(pk), action="delete")
    assert deleted.changes == {
        "id": [pk, None],
        "upload": [f"attachments/{path.name}", None],
    }


def test_djangos_own_delete_is_still_recorded_in_one_statement():
    note = Note.objects.create(text="gone")

    with CaptureQueriesContext(connection) as queries:
        note.delete()

    assert note.pk is None
    deleted = AuditEntry.objects.for_model(Note).filter(action="delete", object_repr="gone")
    assert deleted.count() == 1
    if connection.vendor == "postgresql":  # the DELETE writes its outbox row itself
        first = queries.captured_queries[0]["sql"]
        assert first.startswith("DELETE") and "auditq_outbox_put" in first


# --------------------------------------------------------------------------- save() overrides


def test_a_save_override_runs_and_its_values_are_recorded():
    stamped = Stamped.objects.create(name="Hello World")
    stamped.name = "Good Bye"
    stamped.save()

    assert [e.changes for e in trail(stamped)][1] == {
        "name": ["Hello World", "Good Bye"],
        "slug": ["hello-world", "good-bye"],
    }
    assert only_entry(stamped, "create").changes["slug"] == [None, "hello-world"]


# ----------------------------------------------------------- values the database decides


@pytest.mark.parametrize("in_transaction", [False, True])
def test_db_default_values_are_recorded_as_the_database_assigned_them(in_transaction):
    with transaction.atomic() if in_transaction else nullcontext():
        counted = Counted.objects.create(name="first")

    stored = Counted.objects.values("number", "created").get(pk=counted.pk)
    create = only_entry(counted, "create")
    assert create.changes["number"] == [None, 7]
    assert create.changes["created"] == [None, stored["created"].isoformat()]
    assert "unencodable" not in str(create.changes)


def test_an_f_expression_update_is_recorded_with_the_value_the_database_computed():
    counted = Counted.objects.create(name="n", number=1)

    counted.number = F("number") + 41
    counted.save()

    assert counted.number == 42
    assert Counted.objects.values_list("number", flat=True).get(pk=counted.pk) == 42
    assert trail(counted)[-1].changes == {"number": [1, 42]}


# --------------------------------------------------------------------------- the query log


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda: Document.objects.create(title="alone"), id="lone-create"),
        pytest.param(lambda: Document.objects.create(title="t").delete(), id="lone-delete"),
        pytest.param(
            lambda: transaction.atomic()(lambda: Document.objects.create(title="in"))(),
            id="transaction",
        ),
    ],
)
def test_every_statement_auditq_runs_is_in_the_query_log_with_its_sql(change):
    with CaptureQueriesContext(connection) as queries:
        change()

    logged = [q["sql"] for q in queries.captured_queries]
    assert logged
    assert all(isinstance(sql, str) and sql for sql in logged), logged
    if connection.vendor == "postgresql":
        assert any("auditq_outbox_put" in sql for sql in logged), logged
    else:
        assert any("auditq_outbox" in sql for sql in logged), logged
