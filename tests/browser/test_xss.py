"""User-controlled text renders inert in a real browser: an XSS payload in an object's
``__str__``, in field values, in the audit context and in a handler's error text is shown
as text on every auditq page, and no script of it runs."""

from __future__ import annotations

import pytest

from auditq import audit_context
from auditq.models import AuditEntry, CallbackRun
from tests.testapp.models import Account, Document

pytestmark = [pytest.mark.django_db(transaction=True)]

PAYLOADS = [
    "<script>window.__xss = (window.__xss || 0) + 1</script>",
    '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">',
    '"><svg onload="window.__xss = (window.__xss || 0) + 1">',
]
EVIL = " ".join(PAYLOADS)


@pytest.fixture
def evil(admin_user):
    """A document titled, filled and changed with payloads, in a context holding them, and
    a handler that failed quoting them."""
    with audit_context(actor=admin_user, note=EVIL):
        document = Document.objects.create(title=EVIL[:200], body=EVIL, data={"x": EVIL})
        document.body = EVIL + " edited"
        document.save()
        Account.objects.create(name=f"broken {EVIL}"[:100])
    run = CallbackRun.objects.get(handler__endswith="always_fails")
    run.status, run.attempts = "failed", 2
    run.last_error = f"ValueError: cannot handle {EVIL}"
    run.errors = [{"at": "now", "error": run.last_error, "traceback": f"Traceback: {EVIL}"}]
    run.save()
    return document, run


def test_payloads_render_as_text_and_never_run(signed_in, live_server, evil):
    page = signed_in
    document, run = evil
    entry = AuditEntry.objects.filter(action="update", object_pk=str(document.pk)).get()
    urls = [
        "/admin/auditq/auditentry/",
        f"/admin/auditq/auditentry/{entry.pk}/change/",
        f"/admin/auditq/auditentry/?content_type__id__exact={entry.content_type_id}"
        f"&object_pk={document.pk}",
        "/admin/auditq/callbackrun/",
        f"/admin/auditq/callbackrun/{run.pk}/change/",
        "/admin/auditq/auditentry/dashboard/",
        f"/admin/testapp/document/{document.pk}/change/",
    ]
    for url in urls:
        page.goto(f"{live_server.url}{url}")
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None, url
    # The payloads were on the pages, as text: the entry's context, its diff, the error.
    page.goto(f"{live_server.url}/admin/auditq/auditentry/{entry.pk}/change/")
    text = page.inner_text("body")
    assert PAYLOADS[0] in text and PAYLOADS[1] in text
    page.goto(f"{live_server.url}/admin/auditq/callbackrun/{run.pk}/change/")
    assert f"cannot handle {PAYLOADS[0]}" in page.inner_text("body")


def test_the_check_would_see_a_script_that_runs(signed_in, live_server):
    """The positive control: a page that does run the payload sets the flag."""
    page = signed_in
    page.set_content(f"<html><body>{PAYLOADS[1]}</body></html>")
    page.wait_for_function("window.__xss === 1")
    assert page.evaluate("window.__xss") == 1
