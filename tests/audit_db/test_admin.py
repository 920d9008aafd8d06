"""The admin with the trail in a database of its own: the list, its filters and search,
the object's trail button, an entry's page, the dashboard, the estimate and revert all
read the entries (and their content types) in the audit database."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.urls import reverse

from auditq import admin as auditq_admin
from auditq.models import AuditEntry
from tests.testapp.models import Document, Tag

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "audit"])

CHANGELIST = "admin:auditq_auditentry_changelist"


@pytest.fixture
def signed_in(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    return client


def audit_type(model) -> ContentType:
    return ContentType.objects.db_manager("audit").get_for_model(model)


def listed(client, **params) -> set[str]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return {entry.object_repr for entry in response.context["cl"].result_list}


def test_the_list_its_model_filter_and_its_search(signed_in):
    Document.objects.create(title="quarterly report")
    Tag.objects.create(name="untracked")  # not audited: no entry
    document_type = audit_type(Document)

    choices = signed_in.get(reverse(CHANGELIST)).context["cl"].filter_specs[1].lookup_choices

    assert (str(document_type.pk), str(document_type)) in choices
    assert listed(signed_in) == {"quarterly report"}
    assert listed(signed_in, content_type__id__exact=document_type.pk) == {"quarterly report"}
    assert listed(signed_in, q="arterly") == {"quarterly report"}
    assert listed(signed_in, q="nothing like it") == set()


def test_the_objects_trail_button_lists_its_entries(signed_in):
    document = Document.objects.create(title="doc")
    Document.objects.create(title="another")

    html = signed_in.get(reverse("admin:testapp_document_change", args=[document.pk])).content
    trail = f"{reverse(CHANGELIST)}?content_type__id__exact={audit_type(Document).pk}"

    assert f'href="{trail}&amp;object_pk={document.pk}"'.encode() in html
    assert listed(
        signed_in, content_type__id__exact=audit_type(Document).pk, object_pk=document.pk
    ) == {"doc"}


def test_an_entrys_page_names_the_model_and_the_related_objects(signed_in):
    document = Document.objects.create(title="doc")
    document.tags.add(Tag.objects.create(name="urgent"))
    update = AuditEntry.objects.for_object(document).get(action="update")

    html = signed_in.get(reverse("admin:auditq_auditentry_change", args=[update.pk])).content

    assert f"Document #{document.pk} changed".encode() in html
    assert b"urgent" in html


def test_the_dashboard_counts_the_audit_databases_entries(signed_in):
    Document.objects.create(title="doc")

    response = signed_in.get(reverse("admin:auditq_dashboard"))

    assert response.status_code == 200
    assert response.context["throughput"].total == 1


def test_the_unfiltered_count_is_the_audit_databases_estimate(signed_in, monkeypatch):
    for number in range(5):
        Document.objects.create(title=f"doc {number}")
    with connections["audit"].cursor() as cursor:
        cursor.execute("ANALYZE auditq_auditentry")
    monkeypatch.setattr(auditq_admin.CappedCountPaginator, "CAP", 2)

    response = signed_in.get(reverse(CHANGELIST))

    assert response.context["cl"].paginator.approximate == "about"
    assert response.context["cl"].result_count == 5


def test_revert_from_the_admin(signed_in):
    document = Document.objects.create(title="right")
    document.title = "wrong"
    document.save()
    mistake = AuditEntry.objects.for_object(document).get(action="update")
    chosen = {"action": "revert_entries", "_selected_action": [mistake.pk]}

    asked = signed_in.post(reverse(CHANGELIST), chosen)
    done = signed_in.post(reverse(CHANGELIST), {**chosen, "post": "yes"}, follow=True)

    assert "Revert these changes?" in asked.content.decode()
    assert "1 change reverted." in done.content.decode()
    document.refresh_from_db()
    assert document.title == "right"
    assert AuditEntry.objects.for_object(document).last().context["reverted"] == mistake.pk
