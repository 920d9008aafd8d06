"""Reading the trail, and migrations that never drift."""

from io import StringIO

import pytest
from django.core.management import call_command

from auditq.models import AuditEntry
from tests.testapp.models import Document, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def test_for_object_is_oldest_first_and_scoped_to_the_object():
    document = Document.objects.create(title="one")
    other = Document.objects.create(title="other")
    document.title = "two"
    document.save()

    assert [e.action for e in AuditEntry.objects.for_object(document)] == ["create", "update"]
    assert AuditEntry.objects.for_object(other).count() == 1


def test_for_model_lists_every_object_of_the_model():
    Document.objects.create(title="a")
    Document.objects.create(title="b")
    Tag.objects.create(name="not audited")

    assert AuditEntry.objects.for_model(Document).count() == 2
    assert AuditEntry.objects.for_model(Tag).count() == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="needs a saved object"):
        AuditEntry.objects.for_object(Document(title="unsaved"))
    with pytest.raises(ValueError, match="takes a model class"):
        AuditEntry.objects.for_model("testapp.Document")


def test_entry_helpers():
    document = Document.objects.create(title="one")
    tag = Tag.objects.create(name="red")
    document.tags.add(tag)
    create, link = AuditEntry.objects.for_object(document)

    assert str(create) == f"create testapp.document {document.pk}"
    assert "title" in create.changed_fields
    assert ("title", None, "one") in create.get_changes_display()
    assert link.get_changes_display() == [("tags", [], [tag.pk])]


def test_migrations_are_in_sync_with_the_models():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
