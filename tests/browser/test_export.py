"""The admin's export in a real browser, with a real worker: filter the list, click
Export, wait on the run's page until the link shows, download the file."""

from __future__ import annotations

import csv
import datetime
import io

import pytest
from django.contrib.auth.models import User

from auditq.models import OperationRun
from tests.browser.conftest import ARTIFACTS
from tests.helpers import entry

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


def test_export_of_the_filtered_list_downloads_once_the_worker_is_done(
    signed_in, live_server, broker, workers, settings, tmp_path
):
    media = tmp_path / "media"
    settings.MEDIA_ROOT = str(media)
    workers(AUDITQ_TEST_MEDIA_ROOT=str(media))
    people = [User.objects.create_user(name) for name in ("ada", "grace")]
    for minute, action in enumerate(["create", "update", "update", "delete", "update"]):
        entry(people[minute % 2], action, at=T0 + datetime.timedelta(minutes=minute))
    page = signed_in

    page.goto(f"{live_server.url}/admin/auditq/auditentry/?action__exact=update")
    page.click("#auditq-export-csv")
    page.wait_for_url("**/admin/auditq/operationrun/*/change/")
    run = OperationRun.objects.get(name="auditq.export")
    for _ in range(120):  # a worker writes it meanwhile: look again, as a person would
        if page.locator("#auditq-download-link").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert "3 of 3 (100%)" in page.inner_text(".field-progress_display")
    with page.expect_download() as download:
        page.click("#auditq-download-link")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    saved = ARTIFACTS / "export.csv"
    download.value.save_as(saved)

    assert download.value.suggested_filename == f"audit-entries-{run.pk}.csv"
    header, *rows = list(csv.reader(io.StringIO(saved.read_text())))
    assert header[:3] == ["id", "event_id", "model"]
    assert [(row[2], row[5], row[12][:16]) for row in rows] == [
        ("auth.user", "update", "2026-03-01T12:01"),
        ("auth.user", "update", "2026-03-01T12:02"),
        ("auth.user", "update", "2026-03-01T12:04"),
    ]
