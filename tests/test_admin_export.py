"""The admin's background export: the list as filtered, written by an operation in chunks,
with its progress, an expiring download link for staff who may view entries, and an email.

Steps run eagerly here (in this process, after commit); ``tests/integration/
test_export.py`` runs them in real worker processes.
"""

import datetime
import json
import time
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.files.storage import default_storage
from django.urls import reverse

from auditq import exports
from auditq.admin import exports as admin_exports
from auditq.delivery import broker
from auditq.models import AuditEntry, OperationRun, StepRun
from auditq.operations import executor
from tests.helpers import entry, staff
from tests.testapp.models import Account, Document

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
START = "admin:auditq_export"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def trail():
    """Seven entries of two models: five updates, out of time order."""
    document = Document.objects.create(title="Report")
    account = Account.objects.create(name="Finance")
    AuditEntry.objects.all().delete()  # their creates, recorded at once: ours instead
    minutes = [(document, "update", 50), (document, "create", 0), (account, "update", 10)]
    minutes += [(document, "update", m) for m in (40, 20, 30)] + [(account, "delete", 60)]
    return [
        entry(obj, action, at=T0 + datetime.timedelta(minutes=m), object_repr=f"{obj}@{m}")
        for obj, action, m in minutes
    ]


def lines(run: OperationRun) -> list[dict]:
    run.refresh_from_db()
    with default_storage.open(run.values["file"]) as file:
        return [json.loads(line) for line in file.read().decode().splitlines()]


def start(client, query: str = "", format: str = "jsonl"):
    return client.post(reverse(START), {"query": query, "format": format})


def only_run() -> OperationRun:
    return OperationRun.objects.get(name="auditq.export")


def test_export_writes_the_filtered_list_oldest_first_and_opens_its_run(admin_client, trail):
    response = start(admin_client, "action__exact=update")

    run = only_run()
    assert response.status_code == 302
    assert response.url == reverse("admin:auditq_operationrun_change", args=[run.pk])
    assert run.status == "succeeded"
    updates = sorted((e for e in trail if e.action == "update"), key=lambda e: e.occurred_at)
    assert [row["id"] for row in lines(run)] == [e.pk for e in updates]
    assert (run.progress_done, run.progress_total) == (5, 5)
    assert run.values["written"] == 5
    assert run.actor_repr == "admin"


def test_export_follows_search_model_and_date_of_the_list(admin_client, trail):
    document_type = trail[1].content_type_id
    query = {
        "content_type__id__exact": document_type,
        "q": "Report",
        "occurred_at__gte": "2026-03-01 12:25:00+00:00",
    }
    start(admin_client, urlencode(query))

    assert [row["object_repr"] for row in lines(only_run())] == [
        "Report@30",
        "Report@40",
        "Report@50",
    ]


def test_a_chunked_export_reenters_its_step_and_writes_each_entry_once(trail, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_SIZE", 2)  # a fetch, and a write, of 2 rows
    admin = User.objects.create_superuser("boss")

    run = admin_exports.EXPORT.start(**params(admin, "csv"), chunk_rows=2)

    run.refresh_from_db()
    steps = [
        s.rsplit(".", 1)[1] for s in StepRun.objects.filter(run=run).values_list("step", flat=True)
    ]
    assert steps == ["begin", "write", "write", "write", "write", "finish"]
    with default_storage.open(run.values["file"]) as file:
        header, *rows = file.read().decode().splitlines()
    assert header.startswith("id,event_id,model,")
    assert [int(row.split(",")[0]) for row in rows] == [
        e.pk for e in sorted(trail, key=lambda e: e.occurred_at)
    ]
    assert (run.progress_done, run.progress_total, run.status) == (7, 7, "succeeded")


def params(user: User, format: str = "jsonl", query: str = "") -> dict:
    return {
        "format": format,
        "query": query,
        "site": "admin",
        "user_id": user.pk,
        "file": f"auditq/exports/test/audit-entries.{format}",
        "base_url": "http://testserver",
    }


def test_a_chunk_run_again_cuts_what_its_lost_attempt_wrote(trail, undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)  # steps run by hand
    admin = User.objects.create_superuser("boss")
    run = admin_exports.EXPORT.start(**params(admin), chunk_rows=3)
    executor.run(run.pk, "default")  # begin
    executor.run(run.pk, "default")  # the first chunk
    run.refresh_from_db()
    # The next chunk's worker wrote and died before its commit.
    with default_storage.open(run.values["file"], "ab") as file:
        file.write(b'{"half": "a row"}\n{"id"')

    while executor.run(run.pk, "default") == "pending":
        pass

    assert [row["id"] for row in lines(run)] == [
        e.pk for e in sorted(trail, key=lambda e: e.occurred_at)
    ]


def test_entries_recorded_after_the_export_began_are_left_out(trail, undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    admin = User.objects.create_superuser("boss")
    run = admin_exports.EXPORT.start(**params(admin))
    executor.run(run.pk, "default")  # begin: 7 entries
    entry(Document.objects.first(), at=T0)  # recorded now, though it occurred long ago

    while executor.run(run.pk, "default") == "pending":
        pass

    assert len(lines(run)) == 7
    assert (run.progress_done, run.progress_total) == (7, 7)


def test_a_user_who_may_no_longer_view_entries_fails_the_export(trail, undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    clerk = User.objects.create_user("clerk", is_staff=True)
    run = admin_exports.EXPORT.start(**params(clerk))

    executor.run(run.pk, "default")

    run.refresh_from_db()
    assert run.status == "failed"
    assert "may no longer view entries" in run.error


def download_link(client, run: OperationRun) -> str:
    page = client.get(reverse("admin:auditq_operationrun_change", args=[run.pk])).content
    html = page.decode()
    marker = 'id="auditq-download-link"'
    if marker not in html:
        return ""
    tag = html[html.rindex("<a ", 0, html.index(marker)) : html.index(marker)]
    return tag.split('href="')[1].split('"')[0]


def test_the_run_page_links_the_file_and_shows_progress(admin_client, trail):
    start(admin_client, format="csv")
    run = only_run()

    link = download_link(admin_client, run)
    page = admin_client.get(reverse("admin:auditq_operationrun_change", args=[run.pk])).content
    assert "7 of 7 (100%)" in page.decode()
    response = admin_client.get(link)
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="audit-entries-{run.pk}.csv"'
    body = b"".join(response.streaming_content).decode()
    assert len(body.splitlines()) == 8  # the header and 7 entries


def test_the_link_is_served_only_to_staff_who_may_view_entries(
    admin_client, client, trail, django_user_model
):
    start(admin_client)
    run = only_run()
    link = download_link(admin_client, run)

    runs_only = staff(django_user_model, "view_operationrun")
    client.force_login(runs_only)
    assert download_link(client, run) == ""  # not on the page
    assert client.get(link).status_code == 403
    other = OperationRun.objects.create(name="tests.orders", step="x.y", status="succeeded")
    assert download_link(admin_client, other) == ""  # not an export: no link
    client.logout()
    assert client.get(link).status_code == 302  # to the login page
    assert "/login/" in client.get(link).url


def test_the_link_expires(admin_client, trail, settings, monkeypatch):
    settings.AUDITQ = {**settings.AUDITQ, "EXPORT_LINK_SECONDS": 60}
    start(admin_client)
    link = download_link(admin_client, only_run())
    now = time.time()

    monkeypatch.setattr("django.core.signing.time.time", lambda: now + 61)
    response = admin_client.get(link)

    assert response.status_code == 410
    assert b"expired" in response.content


def test_a_forged_or_unknown_link_is_not_found(admin_client, trail):
    start(admin_client)
    run = only_run()
    token = admin_exports.token(run.pk)
    forged = (
        token[: token.index(":")].replace(str(run.pk), str(run.pk + 1)) + token[token.index(":") :]
    )

    assert (
        admin_client.get(reverse("admin:auditq_export_download", args=[forged])).status_code == 404
    )
    other = admin_exports.token(run.pk + 100)
    assert (
        admin_client.get(reverse("admin:auditq_export_download", args=[other])).status_code == 404
    )


def test_an_email_with_the_link_goes_to_the_user_when_email_is_configured(client, trail, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    admin = User.objects.create_superuser("boss", email="boss@example.com", password="pw")
    client.force_login(admin)

    start(client)

    [message] = mail.outbox
    assert message.to == ["boss@example.com"]
    assert message.subject == "Your export of 7 audit entries is ready"
    link = next(line for line in message.body.splitlines() if line.startswith("http://testserver/"))
    assert client.get(link.removeprefix("http://testserver")).status_code == 200
    assert only_run().values["email"] == "sent to boss@example.com"


def test_no_email_without_email_settings_or_an_address(client, trail, settings):
    admin = User.objects.create_superuser("boss", email="", password="pw")
    client.force_login(admin)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    start(client)  # configured, but no address

    assert mail.outbox == []
    assert only_run().status == "succeeded"


def test_an_email_that_fails_leaves_the_export_done(client, trail, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_PORT = 1  # nothing listens there
    admin = User.objects.create_superuser("boss", email="boss@example.com", password="pw")
    client.force_login(admin)

    start(client)

    run = only_run()
    assert run.status == "succeeded"
    assert run.values["email"].startswith("not sent: ")


def test_a_list_filter_that_no_longer_applies_fails_the_export_at_once(
    trail, undelivered, monkeypatch
):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    admin = User.objects.create_superuser("boss")
    run = admin_exports.EXPORT.start(**params(admin, query="nope__exact=1"))

    executor.run(run.pk, "default")

    run.refresh_from_db()
    assert run.status == "failed"  # without retries: they cannot help
    assert "the list's filters no longer apply" in run.error


def test_starting_needs_the_view_permission_a_post_and_a_known_format(
    admin_client, client, trail, django_user_model
):
    client.force_login(staff(django_user_model, "view_operationrun"))
    assert start(client).status_code == 403
    assert admin_client.get(reverse(START)).status_code == 405

    response = start(admin_client, "action__exact=update", format="xml")

    assert response.url == reverse("admin:auditq_auditentry_changelist") + "?action__exact=update"
    assert not OperationRun.objects.exists()


def test_a_viewer_without_the_runs_page_is_sent_back_to_the_list(client, trail, django_user_model):
    viewer = staff(django_user_model, "view_auditentry")
    client.force_login(viewer)

    response = start(client, "action__exact=update")

    assert response.url == reverse("admin:auditq_auditentry_changelist") + "?action__exact=update"
    assert only_run().status == "succeeded"
    assert "Export #" in client.get(response.url).content.decode()


def test_the_list_offers_export_of_its_current_filter(admin_client, trail):
    page = admin_client.get(
        reverse("admin:auditq_auditentry_changelist"), {"action__exact": "update"}
    )

    html = page.content.decode()
    assert 'id="auditq-export-jsonl"' in html and 'id="auditq-export-csv"' in html
    assert 'name="query" value="action__exact=update"' in html


def test_the_dashboard_shows_the_progress_of_runs_in_progress(admin_client):
    run = OperationRun.objects.create(
        name="auditq.export", step="x.y", status="running", progress_done=1200, progress_total=4800
    )

    html = admin_client.get(reverse("admin:auditq_dashboard")).content.decode()

    assert f"auditq.export #{run.pk}" in html
    assert "1,200 of 4,800 (25%)" in html


def test_a_user_who_is_gone_fails_the_export_at_once(trail, undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    admin = User.objects.create_superuser("boss")
    run = admin_exports.EXPORT.start(**params(admin))
    admin.delete()

    executor.run(run.pk, "default")

    run.refresh_from_db()
    assert run.status == "failed"
    assert "the user who started the export is gone or inactive" in run.error


def test_a_link_to_a_file_deleted_since_is_not_found(admin_client, trail):
    start(admin_client)
    run = only_run()
    link = download_link(admin_client, run)
    default_storage.delete(run.values["file"])

    assert admin_client.get(link).status_code == 404


def test_a_chunk_that_runs_out_of_time_hands_over_to_the_next(trail, monkeypatch):
    monkeypatch.setattr(admin_exports, "CHUNK_SECONDS", -1.0)  # each chunk: one row, then out
    admin = User.objects.create_superuser("boss")

    run = admin_exports.EXPORT.start(**params(admin))

    run.refresh_from_db()
    writes = StepRun.objects.filter(run=run, step__endswith=".write").count()
    assert writes == 8  # one row each, and one that finds none left
    assert [row["id"] for row in lines(run)] == [
        e.pk for e in sorted(trail, key=lambda e: e.occurred_at)
    ]


def test_an_empty_list_exports_an_empty_file_and_the_email_says_one_hour(client, trail, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.AUDITQ = {**settings.AUDITQ, "EXPORT_LINK_SECONDS": 3600}
    admin = User.objects.create_superuser("boss", email="boss@example.com", password="pw")
    client.force_login(admin)

    start(client, "q=nothing-matches", format="csv")

    run = only_run()
    assert (run.status, run.progress_done, run.progress_total) == ("succeeded", 0, 0)
    with default_storage.open(run.values["file"]) as file:
        assert file.read().decode().splitlines() == [",".join(exports.COLUMNS)]
    assert "the link works for 1 hour)" in mail.outbox[0].body


def test_an_export_for_an_admin_site_this_process_lacks_fails_at_once(
    trail, undelivered, monkeypatch
):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    admin = User.objects.create_superuser("boss")
    run = admin_exports.EXPORT.start(**{**params(admin), "site": "elsewhere"})

    executor.run(run.pk, "default")

    run.refresh_from_db()
    assert (run.status, run.error) == (
        "failed",
        "OperationError: no admin site is named 'elsewhere' in this process.",
    )


def test_the_writer_names_the_formats_it_knows():
    with pytest.raises(ValueError, match="format must be one of jsonl, csv, not 'xml'"):
        exports.Writer("xml")
