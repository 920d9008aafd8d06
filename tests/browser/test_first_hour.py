"""What a new user sees in the admin in the first hour, in a real browser: the trail says
when changes wait for a worker, the dashboard says nothing untrue, values read as the
admin shows them."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType

from auditq.delivery import heartbeat
from auditq.models import AuditEntry
from tests.testapp.models import Document, Everything, Player, Team

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_the_trail_says_when_changes_wait_and_no_worker_runs(signed_in, live_server, undelivered):
    page = signed_in
    document = Document.objects.create(title="waiting")  # left in the outbox: no worker

    page.goto(f"{live_server.url}/admin/testapp/document/{document.pk}/change/")
    page.click("a.auditq-trail-link")
    page.wait_for_selector("#changelist")
    banner = page.locator(".auditq-unrecorded")
    assert banner.is_visible()
    assert "Changes are waiting to be recorded" in banner.inner_text()
    assert "not in this list yet" in banner.inner_text()
    assert page.locator("#result_list tbody tr").count() == 0  # the change is not there

    page.goto(f"{live_server.url}/admin/auditq/auditentry/")
    assert page.locator(".auditq-unrecorded").is_visible()
    page.click(".auditq-unrecorded a")  # to the dashboard, which says why
    page.wait_for_selector("#auditq-workers")
    assert page.inner_text("#auditq-workers .auditq-figure") == "0"

    heartbeat.beat("celery@worker1")  # a worker comes up: it will record them
    page.goto(f"{live_server.url}/admin/auditq/auditentry/")
    page.wait_for_selector("#changelist")
    assert page.locator(".auditq-unrecorded").count() == 0
    page.goto(f"{live_server.url}/admin/auditq/auditentry/dashboard/")
    assert page.inner_text("#auditq-workers .auditq-figure") == "1"
    assert "celery@worker1" in page.inner_text("#auditq-workers")


def test_the_dashboard_never_calls_counters_up_to_date_while_changes_wait(
    signed_in, live_server, undelivered
):
    page = signed_in
    Player.objects.create(name="p", team=Team.objects.create(name="red"))  # +1 in the outbox

    page.goto(f"{live_server.url}/admin/auditq/auditentry/dashboard/")
    counters = page.inner_text("#auditq-counters")

    assert "up to date" not in counters
    assert "the 1 undelivered change may hold some" in counters


def test_an_empty_chart_says_there_is_nothing_yet(signed_in, live_server):
    page = signed_in
    page.goto(f"{live_server.url}/admin/auditq/auditentry/dashboard/")

    chart = page.locator("#auditq-throughput")
    assert "No entries in the last 24 hours yet: nothing to draw." in chart.inner_text()
    assert chart.locator("svg").count() == 0
    assert "By time of change" not in chart.inner_text()


def test_an_entry_shows_a_boolean_as_the_admin_does(signed_in, live_server):
    page = signed_in
    thing = Everything.objects.create()
    thing.flag = True
    thing.save()
    entry = AuditEntry.objects.get(
        content_type=ContentType.objects.get_for_model(Everything),
        object_pk=str(thing.pk),
        action="update",
    )

    page.goto(f"{live_server.url}/admin/auditq/auditentry/{entry.pk}/change/")
    row = page.locator("table.auditq-diff tr", has_text="Flag")

    assert " ".join(row.inner_text().split()) == "Flag No → Yes"
    assert row.locator("img[src$='icon-no.svg']").count() == 1
    assert row.locator("img[src$='icon-yes.svg']").count() == 1
