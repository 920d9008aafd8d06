"""Operation runs in the admin: the list, the path a run took, and retry by hand."""

import datetime
import re

import pytest
from django.urls import reverse

from auditq.delivery import broker
from auditq.models import OperationRun, StepRun
from auditq.operations import executor
from tests.helpers import assert_retry_all_guarded, staff
from tests.testapp import operations as ops

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:auditq_operationrun_changelist"
RETRY_ONE = "admin:auditq_operationrun_retry"
RETRY_ALL = "admin:auditq_dashboard_retry_operations"


@pytest.fixture
def sent(undelivered, monkeypatch) -> list:
    """Retried runs are published, not run: they stay pending for the test to see."""
    messages: list = []
    monkeypatch.setattr(broker, "send", lambda task, args, **kwargs: messages.append(args))
    return messages


def failed_run(order: int) -> OperationRun:
    """A run of ``tests.flaky`` stopped at its second step, with a traceback."""
    run = ops.flaky.start(order=order)  # run here, or only published (``sent``)
    for _ in range(2):
        if OperationRun.objects.get(pk=run.pk).status == "pending":
            executor.run(run.pk, "default")
    run.refresh_from_db()
    assert run.status == "failed"
    return run


def test_runs_are_listed_filtered_and_searched_but_never_edited(admin_client):
    done = ops.orders.start(order=41, amount=5)
    failed = failed_run(order=42)
    url = reverse(CHANGELIST)

    def listed(**query) -> set[int]:
        page = admin_client.get(url, query).content.decode()
        return {run.pk for run in (done, failed) if f"/{run.pk}/change/" in page}

    assert listed() == {done.pk, failed.pk}
    assert "Add operation run" not in admin_client.get(url).content.decode()
    assert listed(status__exact="failed") == {failed.pk}
    assert listed(operation="tests.orders") == {done.pk}
    # Not the start() arguments: a search would tell whether a masked one holds a guess.
    assert listed(q='"order": 42') == set()
    assert listed(q="flaky") == {failed.pk}  # in the name
    assert admin_client.get(reverse("admin:auditq_operationrun_add")).status_code == 403


def path_rows(html: str) -> list[list[str]]:
    """The cells of each row of a run page's path table (one row per attempt at a step)."""
    path = html[html.index('id="auditq-operation-path"') :]
    rows = re.findall(r'<tr class="auditq-step [^"]*">(.*?)</tr>', path, re.DOTALL)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL) for row in rows]


def test_a_run_page_shows_the_path_with_each_attempt(admin_client):
    run = failed_run(order=1)
    first, failed = run.steps.order_by("id")
    began = datetime.datetime(2024, 5, 1, 9, 30, tzinfo=datetime.UTC)
    StepRun.objects.filter(pk=first.pk).update(
        started_at=began, finished_at=began + datetime.timedelta(milliseconds=850)
    )
    StepRun.objects.filter(pk=failed.pk).update(
        started_at=began + datetime.timedelta(seconds=1),
        finished_at=began + datetime.timedelta(seconds=13.5),
    )

    page = admin_client.get(reverse("admin:auditq_operationrun_change", args=[run.pk]))

    html = page.content.decode()
    path = html[html.index('id="auditq-operation-path"') :]
    # step, attempt, status, started, duration
    assert [cells[1:6] for cells in path_rows(html)] == [
        ["tests.testapp.operations.first", "1", "succeeded", "2024-05-01 09:30:00", "850 ms"],
        [
            "tests.testapp.operations.fail_until_allowed",
            "1",
            "failed",
            "2024-05-01 09:30:01",
            "12.5 s",
        ],
    ]
    assert f"RuntimeError: declined for run {run.pk}" in path
    assert "<summary>traceback</summary>" in path
    assert 'name="_save"' not in html
    assert "Retry from the failed step" in html


def test_one_run_is_retried_from_its_page(admin_client, sent):
    run = failed_run(order=1)
    sent.clear()  # its own steps' messages

    assert admin_client.get(reverse(RETRY_ONE, args=[run.pk])).status_code == 405  # POST only
    response = admin_client.post(reverse(RETRY_ONE, args=[run.pk]), follow=True)

    assert "1 run queued for retry at the step that failed" in response.content.decode()
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("pending", 0)
    assert sent == [(run.pk, "default")]
    again = admin_client.post(reverse(RETRY_ONE, args=[run.pk]), follow=True)
    assert "The run has not failed: nothing to retry." in again.content.decode()
    assert admin_client.post(reverse(RETRY_ONE, args=[run.pk + 100])).status_code == 404
    for key in ("abc", "1" * 20):  # not a key: as Django's change page, no such run
        assert admin_client.post(reverse(RETRY_ONE, args=[key])).status_code == 404


def test_the_actions_need_the_change_permission(client, django_user_model, sent):
    run = failed_run(order=1)
    url = reverse(CHANGELIST)
    viewer = staff(django_user_model, "view_operationrun")
    client.force_login(viewer)
    assert "retry_selected" not in client.get(url).content.decode()
    page = client.get(reverse("admin:auditq_operationrun_change", args=[run.pk])).content.decode()
    assert "Retry from the failed step" not in page
    assert client.post(reverse(RETRY_ONE, args=[run.pk])).status_code == 403

    retrier = staff(django_user_model, "view_operationrun", "change_operationrun")
    client.force_login(retrier)
    response = client.post(
        url, {"action": "retry_selected", "_selected_action": [run.pk]}, follow=True
    )

    assert "1 run queued for retry" in response.content.decode()
    run.refresh_from_db()
    assert run.status == "pending"
    response = client.post(
        url, {"action": "cancel_selected", "_selected_action": [run.pk]}, follow=True
    )
    assert "1 run cancelled" in response.content.decode()
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_the_dashboard_shows_failed_runs_and_retries_them_all(admin_client, sent):
    failed_run(order=1)
    failed_run(order=2)
    sent.clear()

    page = admin_client.get(reverse("admin:auditq_dashboard")).content.decode()
    block = page[page.index('id="auditq-failed-operations"') :]
    assert '<div class="auditq-figure">2</div>' in block
    assert "RuntimeError: declined for run" in block
    assert "Retry all 2 failed runs" in block

    assert admin_client.get(reverse(RETRY_ALL)).status_code == 405  # POST only
    response = admin_client.post(reverse(RETRY_ALL), follow=True)
    assert "Failed operations: 2 runs queued for retry" in response.content.decode()
    assert set(OperationRun.objects.values_list("status", flat=True)) == {"pending"}
    assert len(sent) == 2


def test_retry_all_checks_csrf_and_permission(django_user_model):
    failed_run(order=1)

    assert_retry_all_guarded(django_user_model, RETRY_ALL, "view_auditentry", "view_operationrun")

    assert OperationRun.objects.get().status == "failed"


def test_a_run_page_masks_arguments_and_values_named_like_masked_fields(admin_client):
    run = ops.leaky.start(order=7, api_token="tok-SECRET-1", nested={"pin_secret": "4242"})
    secrets = ("tok-SECRET-1", f"cs-{run.pk}-hush", "4242")

    page = admin_client.get(reverse("admin:auditq_operationrun_change", args=[run.pk]))
    listed = admin_client.get(reverse(CHANGELIST), {"q": "tok-SECRET-1"})

    html = page.content.decode()
    assert not [secret for secret in secrets if secret in html]
    assert "&quot;api_token&quot;: &quot;***&quot;" in html
    assert "&quot;order&quot;: 7" in html
    assert f"/{run.pk}/change/" not in listed.content.decode()
