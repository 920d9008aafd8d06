"""The admin's export against Redis and real ``celery worker`` processes: the file in the
default storage, chunk by chunk, its download link and the email."""

import datetime
import email
import json
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.urls import reverse

from auditq.admin import exports as admin_exports
from auditq.models import AuditEntry, OperationRun, StepRun
from tests.helpers import entry
from tests.integration.test_operations import settled

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def places(settings, tmp_path) -> dict[str, str]:
    """Where this process and its workers keep files and mail: the same folders."""
    media, mail = tmp_path / "media", tmp_path / "mail"
    mail.mkdir()
    settings.MEDIA_ROOT = str(media)
    return {"AUDITQ_TEST_MEDIA_ROOT": str(media), "AUDITQ_TEST_EMAIL_DIR": str(mail)}


def trail(count: int) -> list[AuditEntry]:
    """``count`` entries about users (not audited: no entry of their own), newest first."""
    people = [User.objects.create_user(f"person{n}") for n in range(3)]
    return [
        entry(people[n % 3], at=T0 - datetime.timedelta(minutes=n), object_repr=f"#{n}")
        for n in range(count)
    ]


def test_a_worker_writes_the_export_and_mails_its_link(broker, workers, places, client):
    workers(**places)
    written = trail(10)
    boss = User.objects.create_superuser("boss", email="boss@example.com", password="pw")
    client.force_login(boss)

    client.post(reverse("admin:auditq_export"), {"query": "q=%235", "format": "jsonl"})
    run = settled(OperationRun.objects.get(name="auditq.export"), "succeeded", broker)

    with default_storage.open(run.values["file"]) as file:
        [row] = [json.loads(line) for line in file.read().splitlines()]
    assert (row["id"], row["object_repr"]) == (written[5].pk, "#5")
    assert (run.progress_done, run.progress_total) == (1, 1)
    [sent] = list(Path(places["AUDITQ_TEST_EMAIL_DIR"]).iterdir())
    message = email.message_from_string(sent.read_text())
    assert message["To"] == "boss@example.com"
    link = re.search(r"http://testserver(/\S+)", message.get_payload()).group(1)
    response = client.get(link)
    assert json.loads(b"".join(response.streaming_content))["id"] == written[5].pk


def test_two_workers_write_a_chunked_export_each_entry_once_in_order(broker, workers, places):
    workers(**places)
    workers(**places)
    written = trail(25)
    boss = User.objects.create_superuser("boss")

    run = admin_exports.EXPORT.start(
        format="csv",
        query="",
        site="admin",
        user_id=boss.pk,
        file="auditq/exports/chunked/audit-entries.csv",
        base_url="http://testserver",
        chunk_rows=4,
    )
    run = settled(run, "succeeded", broker)

    with default_storage.open(run.values["file"]) as file:
        header, *rows = file.read().decode().splitlines()
    assert header.startswith("id,event_id,model,")
    assert [int(row.split(",")[0]) for row in rows] == [e.pk for e in reversed(written)]
    chunks = StepRun.objects.filter(run=run, step__endswith=".write", status="succeeded")
    assert chunks.count() == 7  # 6 of 4 entries and one of 1
    assert (run.progress_done, run.progress_total) == (25, 25)
