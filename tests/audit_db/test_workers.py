"""Real worker processes with the trail in a database of its own: each change reaches it
once, even when a worker dies between the audit database's commit and the outbox's."""

import pytest
from django.db import transaction

from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.conftest import wait_for
from tests.integration.test_delivery import quiet
from tests.testapp.models import Document, Effect, Ticket

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "audit"])


def test_a_worker_records_in_the_audit_database_and_clears_the_outbox(broker, workers):
    workers()
    document = Document.objects.create(title="draft")
    document.title = "final"
    document.save()
    Ticket.objects.create(subject="printer", state="closed")

    wait_for(lambda: AuditEntry.objects.count() == 2, 30, "two entries")
    wait_for(lambda: quiet(broker), 30, "the workers to be done")

    assert [(e.action, e._state.db) for e in AuditEntry.objects.order_by("id")] == [
        ("create", "audit"),
        ("update", "audit"),
    ]
    assert not Outbox.objects.exists()
    assert CallbackRun.objects.get().status == "succeeded"
    assert Effect.objects.filter(handler="closed").count() == 1


def test_a_worker_killed_between_the_two_commits_records_each_change_once(
    broker, workers, tmp_path
):
    stalled = tmp_path / "stalled"
    doomed = workers(AUDITQ_TEST_STALL=str(stalled))  # tests/stallapp: holds it there
    with transaction.atomic():
        for number in range(3):
            Document.objects.create(title=f"doc {number}")
        Ticket.objects.create(subject="printer", state="closed")  # a handler: a ledger row

    wait_for(stalled.exists, 30, "the worker to hold between the two commits")
    # The audit database has committed the entries; the worker's own transaction, which
    # deleted the outbox row and wrote the handler's run, has not committed.
    first = dict(AuditEntry.objects.values_list("event_id", "id"))
    assert {str(key) for key in first} == set(stalled.read_text().split(","))
    assert Outbox.objects.count() == 1
    assert not CallbackRun.objects.exists()

    doomed.kill()  # SIGKILL, between the two commits
    again = workers()

    wait_for(lambda: not Outbox.objects.exists(), 30, "the row to be recorded again")
    wait_for(lambda: quiet(broker), 30, "the workers to be done")
    assert "4 changes (audit 3, callbacks 1," in again.log.read_text()  # handed over again
    assert dict(AuditEntry.objects.values_list("event_id", "id")) == first  # once each
    assert AuditEntry.objects.count() == 3
    assert CallbackRun.objects.get().status == "succeeded"
    assert Effect.objects.filter(handler="closed").count() == 1
