"""The commands with the trail in a database of its own: ``auditq_prune`` prunes the
entries there and the runs with the writes; ``auditq_export`` and ``auditq_verify`` read
the entries there (the chains beside them); ``auditq_relay`` relays no outbox there."""

import datetime
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from auditq.models import AuditChain, AuditEntry, CallbackRun
from tests.testapp.models import Document, Ticket

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "audit"])


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("auditq_prune", *args, stdout=out)
    return out.getvalue()


def test_prune_deletes_old_entries_in_the_audit_database():
    old, new = Document.objects.create(title="old"), Document.objects.create(title="new")
    AuditEntry.objects.filter(object_pk=str(old.pk)).update(
        occurred_at=timezone.now() - datetime.timedelta(days=400)
    )

    assert prune("--older-than", "365", "--dry-run").startswith("Would delete 1 audit entries")
    assert prune("--older-than", "365").startswith("Deleted 1 audit entries")
    assert [e.object_pk for e in AuditEntry.objects.all()] == [str(new.pk)]


def test_prune_runs_deletes_finished_runs_in_the_writers_database():
    ticket = Ticket.objects.create(subject="printer")
    ticket.state = "closed"
    ticket.save()
    CallbackRun.objects.update(finished_at=timezone.now() - datetime.timedelta(days=40))

    assert prune("--runs", "--older-than", "30").startswith("Deleted 1 finished runs")
    assert not CallbackRun.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database", "default"], "'default' holds no audit entries: they are in 'audit'"),
        (
            ["--runs", "--database", "audit"],
            "'audit' holds no callback runs: they are in 'default'",
        ),
    ],
)
def test_prune_refuses_a_database_without_the_table(args, message):
    with pytest.raises(CommandError, match=message):
        prune("--older-than", "1", *args)


def test_the_relay_refuses_the_audit_database():
    with pytest.raises(CommandError, match="'audit' holds no outbox"):
        call_command("auditq_relay", "--database", "audit", stdout=io.StringIO())


def test_export_reads_the_entries_in_the_audit_database():
    document = Document.objects.create(title="exported")
    out = io.StringIO()

    call_command("auditq_export", "--format", "jsonl", "--output", "-", stdout=out)

    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(row["model"], row["object_pk"], row["action"]) for row in rows] == [
        ("testapp.document", str(document.pk), "create")
    ]


def test_export_refuses_a_database_without_the_entries():
    with pytest.raises(CommandError, match="'default' holds no audit entries: they are in 'audit'"):
        call_command("auditq_export", "--format", "csv", "--database", "default", "--output", "-")


def test_the_chains_live_and_verify_beside_the_entries():
    document = Document.objects.create(title="chained")
    document.title = "chained again"
    document.save()
    out = io.StringIO()

    call_command("auditq_verify", stdout=out)

    assert "The audit trail is intact (1 chains)." in out.getvalue()
    assert AuditChain.objects.using("audit").count() == 1
    assert AuditEntry.objects.using("audit").exclude(chain_hash="").count() == 2


def test_verify_names_an_entry_edited_in_the_audit_database():
    Document.objects.create(title="first")
    second = Document.objects.create(title="second")
    edited = AuditEntry.objects.get(object_pk=str(second.pk))
    AuditEntry.objects.filter(pk=edited.pk).update(object_repr="forged")

    with pytest.raises(CommandError, match=f"at entry {edited.pk}"):
        call_command("auditq_verify", stdout=io.StringIO())


def test_verify_refuses_a_database_without_the_entries():
    with pytest.raises(CommandError, match="'default' holds no audit entries: they are in 'audit'"):
        call_command("auditq_verify", "--database", "default")
