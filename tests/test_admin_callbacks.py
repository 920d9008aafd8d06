"""The callback runs in the admin: read-only list, filters, search, and retry by hand."""

import pytest
from django.urls import reverse

from auditq.models import CallbackRun
from auditq.stream.sealing import unseal
from tests.helpers import assert_retry_all_guarded, staff
from tests.testapp import handlers
from tests.testapp.models import Account

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:auditq_callbackrun_changelist"
RETRY_ALL = "admin:auditq_dashboard_retry_callbacks"


def failed_run(name: str) -> CallbackRun:
    """A run of the always-failing handler that has given up."""
    Account.objects.create(name=f"broken {name}")
    run = CallbackRun.objects.get(object_repr=f"broken {name}")
    run.status, run.attempts = "failed", 2
    run.last_error = f"ValueError: cannot handle broken {name}"
    run.errors = [{"at": "now", "error": run.last_error, "traceback": "Traceback: here"}]
    run.save()
    return run


def test_runs_are_listed_filtered_and_searched_but_never_edited(admin_client):
    failed_run("one")
    failed_run("two")
    url = reverse(CHANGELIST)

    page = admin_client.get(url).content.decode()
    assert "broken one" in page and "broken two" in page
    assert "Add callback run" not in page
    name = f"{handlers.always_fails.__module__}.always_fails"
    assert "broken one" in admin_client.get(url, {"handler": name}).content.decode()
    assert (
        "broken one" not in admin_client.get(url, {"status__exact": "succeeded"}).content.decode()
    )
    found = admin_client.get(url, {"q": "handle broken two"}).content.decode()
    assert "broken two" in found and "broken one" not in found

    run = CallbackRun.objects.get(object_repr="broken one")
    detail = admin_client.get(reverse("admin:auditq_callbackrun_change", args=[run.pk]))
    assert "Traceback: here" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
    assert admin_client.get(reverse("admin:auditq_callbackrun_add")).status_code == 403


def test_the_retry_action_needs_the_change_permission(client, django_user_model):
    run = failed_run("action")
    url = reverse(CHANGELIST)
    viewer = staff(django_user_model, "view_callbackrun")
    client.force_login(viewer)
    assert "retry_now" not in client.get(url).content.decode()

    retrier = staff(django_user_model, "view_callbackrun", "change_callbackrun")
    client.force_login(retrier)
    response = client.post(url, {"action": "retry_now", "_selected_action": [run.pk]}, follow=True)

    assert "1 run queued for retry" in response.content.decode()
    run.refresh_from_db()
    assert (run.status, run.max_attempts, run.note) == ("pending", 3, "retried by hand")


def test_the_dashboard_shows_failed_runs_and_retries_them_all(admin_client):
    failed_run("a")
    failed_run("b")

    page = admin_client.get(reverse("admin:auditq_dashboard")).content.decode()
    block = page[page.index('id="auditq-failed-callbacks"') :]
    assert '<div class="auditq-figure">2</div>' in block
    assert "cannot handle broken b" in block
    assert "Retry all 2 failed runs" in block

    assert admin_client.get(reverse(RETRY_ALL)).status_code == 405  # POST only
    response = admin_client.post(reverse(RETRY_ALL), follow=True)
    assert "2 failed callback runs queued for retry." in response.content.decode()
    assert set(CallbackRun.objects.values_list("status", flat=True)) == {"pending"}


def test_retry_all_checks_csrf_and_permission(django_user_model):
    failed_run("guarded")

    assert_retry_all_guarded(django_user_model, RETRY_ALL, "view_auditentry", "view_callbackrun")

    assert CallbackRun.objects.get().status == "failed"


def test_a_runs_sealed_values_are_never_shown_nor_searched(admin_client):
    Account.objects.create(name="broken vault", password="hunter2")
    run = CallbackRun.objects.get(object_repr="broken vault")
    assert unseal(run.sealed)["password"] == [None, "hunter2"]  # its handler keeps failing

    listed = admin_client.get(reverse(CHANGELIST)).content.decode()
    detail = admin_client.get(reverse("admin:auditq_callbackrun_change", args=[run.pk]))
    assert detail.status_code == 200
    for page in (listed, detail.content.decode()):
        assert "broken vault" in page
        assert run.sealed not in page and "hunter2" not in page
    found = admin_client.get(reverse(CHANGELIST), {"q": run.sealed[10:40]}).content.decode()
    assert "broken vault" not in found
