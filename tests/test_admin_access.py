"""Who may see and do what in auditq's admin: anonymous users, users who are not staff
and staff without auditq's permissions see no entry, run, set-aside row or dashboard and
retry nothing; every URL that changes state is a POST protected by CSRF."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from auditq.models import AuditEntry, CallbackRun, OperationRun, Outbox
from tests.helpers import entry, staff
from tests.test_admin_callbacks import failed_run as failed_callback
from tests.test_admin_operations import failed_run as failed_operation
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_REPR = "only-for-the-permitted"


@pytest.fixture
def records():
    """One of each record the admin shows: an entry, a failed handler run, a failed
    operation run and a set-aside outbox row."""
    document = Document.objects.create(title="a document")
    return {
        "entry": entry(document, object_repr=SECRET_REPR),
        "callback": failed_callback("access"),
        "operation": failed_operation(7),
        "outbox": Outbox.objects.create(
            payload="{not json",
            failed_at=timezone.now(),
            error=f"the outbox payload is not JSON: {SECRET_REPR}",
        ),
    }


def pages(records) -> list[str]:
    entry_, callback, operation, outbox = (
        records[k] for k in ("entry", "callback", "operation", "outbox")
    )
    return [
        reverse("admin:auditq_dashboard"),
        reverse("admin:auditq_auditentry_changelist"),
        reverse("admin:auditq_auditentry_change", args=[entry_.pk]),
        reverse("admin:auditq_callbackrun_changelist"),
        reverse("admin:auditq_callbackrun_change", args=[callback.pk]),
        reverse("admin:auditq_operationrun_changelist"),
        reverse("admin:auditq_operationrun_change", args=[operation.pk]),
        reverse("admin:auditq_outbox_changelist"),
        reverse("admin:auditq_outbox_change", args=[outbox.pk]),
    ]


def state_changes(records) -> list[tuple[str, dict]]:
    """Every auditq admin URL that changes something, with the POST data that would."""
    entry_, callback, operation, outbox = (
        records[k] for k in ("entry", "callback", "operation", "outbox")
    )
    action = "_selected_action"
    return [
        (reverse("admin:auditq_dashboard_retry_callbacks"), {}),
        (reverse("admin:auditq_dashboard_retry_operations"), {}),
        (reverse("admin:auditq_operationrun_retry", args=[operation.pk]), {}),
        (
            reverse("admin:auditq_callbackrun_changelist"),
            {"action": "retry_now", action: [callback.pk]},
        ),
        (
            reverse("admin:auditq_operationrun_changelist"),
            {"action": "retry_selected", action: [operation.pk]},
        ),
        (
            reverse("admin:auditq_operationrun_changelist"),
            {"action": "cancel_selected", action: [operation.pk]},
        ),
        (
            reverse("admin:auditq_outbox_changelist"),
            {"action": "retry_selected", action: [outbox.pk]},
        ),
        (
            reverse("admin:auditq_auditentry_changelist"),
            {"action": "revert_entries", action: [entry_.pk], "post": "yes"},
        ),
        (reverse("admin:auditq_auditentry_delete", args=[entry_.pk]), {"post": "yes"}),
        (reverse("admin:auditq_callbackrun_delete", args=[callback.pk]), {"post": "yes"}),
        (reverse("admin:auditq_operationrun_delete", args=[operation.pk]), {"post": "yes"}),
        (reverse("admin:auditq_outbox_delete", args=[outbox.pk]), {"post": "yes"}),
    ]


def snapshot() -> list:
    """Everything a retry, cancel, revert or delete would change."""
    return [
        list(AuditEntry.objects.values_list("pk", "action")),
        list(CallbackRun.objects.values_list("pk", "status", "attempts", "next_attempt_at")),
        list(OperationRun.objects.values_list("pk", "status", "attempts")),
        list(Outbox.objects.values_list("pk", "failed_at", "error")),
        list(Document.objects.values_list("pk", "title")),
    ]


def client_for(kind: str, django_user_model) -> Client:
    client = Client()
    if kind == "not staff":
        client.force_login(django_user_model.objects.create_user("plain", password="pw"))
    elif kind == "staff without permission":
        client.force_login(staff(django_user_model))
    return client


KINDS = ["anonymous", "not staff", "staff without permission"]


@pytest.mark.parametrize("kind", KINDS)
def test_no_page_shows_a_record_to_those_without_permission(records, django_user_model, kind):
    client = client_for(kind, django_user_model)

    for url in pages(records):
        response = client.get(url)
        assert response.status_code in (302, 403), (url, response.status_code)
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("admin:login")), url
        assert SECRET_REPR not in response.content.decode(), url


@pytest.mark.parametrize("kind", KINDS)
def test_no_state_change_is_allowed_without_permission(records, django_user_model, kind):
    client = client_for(kind, django_user_model)
    before = snapshot()

    for url, data in state_changes(records):
        response = client.post(url, data)
        assert response.status_code in (302, 403), (url, response.status_code)
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("admin:login")), url
    assert snapshot() == before


def test_every_state_change_needs_a_post_with_a_csrf_token(records, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    before = snapshot()

    for url, data in state_changes(records):
        assert client.post(url, data).status_code == 403, url  # no token
        assert client.get(url, data).status_code in (200, 302, 403, 405), url  # no change
    assert snapshot() == before


def test_with_permission_and_a_token_the_same_posts_do_change_state(records, admin_user):
    """The positive control of the tests above: their POSTs are ones that act."""
    client = Client()  # Django's test client passes CSRF, as a browser with the token does
    client.force_login(admin_user)

    # (Tasks run eagerly here: a retried operation fails again at once, as it was.)
    changes = state_changes(records)
    for url, data in [changes[0], changes[3], changes[6]]:
        before = snapshot()
        client.post(url, data)
        assert snapshot() != before, url
