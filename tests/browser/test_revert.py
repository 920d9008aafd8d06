"""Revert in a real browser: tick a change on the trail, choose "Revert selected
changes", read the confirmation table (field, current value, value after the revert),
confirm; and "View as of this entry" from an entry's page."""

from __future__ import annotations

import pytest

from auditq.models import AuditEntry
from tests.testapp.models import Document

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_revert_from_the_trail_after_confirming(signed_in, live_server):
    page = signed_in
    document = Document.objects.create(title="the right title")
    document.title = "a wrong title"
    document.save()
    mistake = AuditEntry.objects.for_object(document).get(action="update")

    page.goto(f"{live_server.url}/admin/auditq/auditentry/")
    page.check(f"input[name=_selected_action][value='{mistake.pk}']")
    page.select_option("select[name=action]", "revert_entries")
    page.click("button[name=index]")

    page.wait_for_selector("text=Revert these changes?")
    cells = page.locator(".auditq-revert-plan tbody tr").first.locator("th, td").all_inner_texts()
    assert cells == ["title", "a wrong title", "the right title"]
    document.refresh_from_db()
    assert document.title == "a wrong title"  # nothing before the confirmation

    page.click("input[type=submit][value='Yes, revert']")

    page.wait_for_selector("text=1 change reverted.")
    document.refresh_from_db()
    assert document.title == "the right title"
    revert = AuditEntry.objects.for_object(document).order_by("-id").first()
    assert revert.context["reverted"] == mistake.pk


def test_no_take_me_back_leaves_the_object_as_it_is(signed_in, live_server):
    page = signed_in
    document = Document.objects.create(title="kept")
    document.title = "kept too"
    document.save()
    change = AuditEntry.objects.for_object(document).get(action="update")

    page.goto(f"{live_server.url}/admin/auditq/auditentry/")
    page.check(f"input[name=_selected_action][value='{change.pk}']")
    page.select_option("select[name=action]", "revert_entries")
    page.click("button[name=index]")
    page.wait_for_selector("text=Revert these changes?")
    page.click("text=No, take me back")

    page.wait_for_selector("#changelist")
    document.refresh_from_db()
    assert document.title == "kept too"


def test_view_as_of_this_entry(signed_in, live_server):
    page = signed_in
    document = Document.objects.create(title="then")
    document.title = "now"
    document.save()
    created = AuditEntry.objects.for_object(document).get(action="create")

    page.goto(f"{live_server.url}/admin/auditq/auditentry/{created.pk}/change/")
    page.click("text=View as of this entry")

    page.wait_for_selector(".auditq-as-of")
    title = page.locator(".auditq-as-of tr", has_text="title").locator("td").inner_text()
    assert title == "then"
