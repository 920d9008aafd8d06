"""The admin in a real browser: from an audited object to its trail, an entry's diff, and
the dashboard.

Screenshots go to ``test-artifacts/browser/``. With ``AUDITQ_DOCS_SCREENSHOTS=1`` the
trail and dashboard screenshots also replace ``docs/trail.png`` and ``docs/dashboard.png``
(the README's), so that an ordinary test run leaves the working tree clean.
"""

from __future__ import annotations

import datetime
import os
import uuid

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from auditq import audit_context
from auditq.models import AuditEntry
from tests.browser.conftest import ARTIFACTS
from tests.conftest import ROOT
from tests.testapp.models import Account, Document, Tag

pytestmark = [
    pytest.mark.django_db(transaction=True),
]

DOCS = ROOT / "docs"


def shoot(page, name: str, docs: bool = False) -> None:
    """Save a screenshot under test-artifacts, and the README's in docs/ when asked to."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    if docs and os.environ.get("AUDITQ_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=DOCS / f"{name}.png", full_page=True)


def edit_a_document(actor: User) -> Document:
    """A document's life, as a request under the admin user would record it."""
    with audit_context(actor=actor, reason="quarterly review"):
        document = Document.objects.create(
            title="Quarterly report",
            body="Revenue grew.\nCosts were flat.\nHeadcount: 12.\nOutlook: stable.",
            data={"region": "EU", "pages": 4},
        )
        document.tags.add(Tag.objects.create(name="finance"), Tag.objects.create(name="q3"))
        document.title = "Quarterly report (final)"
        document.body = "Revenue grew 8%.\nCosts were flat.\nHeadcount: 14.\nOutlook: stable."
        document.status = "published"
        document.data = {"region": "EU", "pages": 6, "reviewed": True}
        document.save()
        account = Account.objects.create(name="Finance team", pin="1234")
        account.pin = "9876"
        account.save()
    return document


def history_for_the_chart() -> None:
    """Entries spread over the last day, so that the throughput chart has a shape."""
    content_type = ContentType.objects.get_for_model(Document)
    now = timezone.now()
    lag = datetime.timedelta(milliseconds=180)
    AuditEntry.objects.bulk_create(
        AuditEntry(
            event_id=uuid.uuid4(),
            content_type=content_type,
            object_pk="0",
            object_repr="imported",
            action="update",
            changes={"status": ["draft", "live"]},
            occurred_at=now - datetime.timedelta(minutes=minute),
            recorded_at=now - datetime.timedelta(minutes=minute) + lag,
        )
        for minute in range(0, 24 * 60, 7)
        for _ in range(1 + (minute // 60) % 5)
    )


def test_from_an_object_to_its_trail_and_an_entry_diff(signed_in, live_server, admin_user):
    page = signed_in
    document = edit_a_document(admin_user)

    page.goto(f"{live_server.url}/admin/testapp/document/{document.pk}/change/")
    page.click("a.auditq-trail-link")
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3  # create, tags added, update
    assert "Quarterly report (final)" in page.inner_text("#result_list")
    shoot(page, "trail-list")

    page.locator("#result_list tbody tr").first.locator("th a").click()
    table = page.locator("table.auditq-diff")
    table.wait_for()
    text = table.inner_text()
    assert "Quarterly report" in text and "Quarterly report (final)" in text
    assert "Headcount: 14." in page.inner_text(".auditq-lines .auditq-add >> nth=1")
    assert '"reviewed": true' in text
    shoot(page, "trail", docs=True)


def test_masked_values_stay_masked(signed_in, live_server, admin_user):
    page = signed_in
    edit_a_document(admin_user)
    account_type = ContentType.objects.get_for_model(Account)

    page.goto(
        f"{live_server.url}/admin/auditq/auditentry/?content_type__id__exact={account_type.pk}"
        "&action__exact=update"
    )
    page.locator("#result_list tbody tr").first.locator("th a").click()
    page.locator("table.auditq-diff").wait_for()

    assert "*** masked" in page.inner_text("table.auditq-diff")
    assert "9876" not in page.content()


def test_dashboard(signed_in, live_server, admin_user):
    page = signed_in
    edit_a_document(admin_user)
    history_for_the_chart()

    page.goto(f"{live_server.url}/admin/")
    page.click("#auditq-sidebar a")
    page.wait_for_selector("#auditq-throughput svg")

    # A day of history: the 24-hour window, one bar per 15 minutes, each with entries.
    assert "last 24 hours" in page.inner_text("#auditq-throughput h2")
    assert page.locator("#auditq-throughput rect").count() >= 95
    assert page.inner_text("#auditq-queue .auditq-figure") == "n/a"  # memory:// broker
    assert page.inner_text("#auditq-backlog .auditq-figure") == "0"
    # No worker runs here, so none has sent a heartbeat: the figure says so, in red.
    assert page.inner_text("#auditq-workers .auditq-figure") == "0"
    assert "auditq-alert" in page.get_attribute("#auditq-workers", "class")
    page.click("text=Failed tasks")
    assert "/django_celery_results/taskresult/" in page.url
    page.go_back()
    shoot(page, "dashboard", docs=True)
