"""The chains on the real stack: concurrent workers extend one model's chain in one
order, and ``auditq.tasks.verify`` runs on a worker as beat would start it."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from auditq.chain import verify
from auditq.models import AuditChain, AuditEntry
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE, wait_for
from tests.integration.test_delivery import quiet
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_workers_keep_one_order_in_a_chain(broker, workers):
    workers()
    workers()
    for batch in range(30):
        with transaction.atomic():
            for number in range(3):
                Document.objects.create(title=f"{batch}-{number}")

    wait_for(
        lambda: AuditEntry.objects.count() >= 90 and quiet(broker),
        90,
        "the changes to be recorded and the system quiet",
    )

    assert AuditEntry.objects.count() == 90
    [result] = verify.verify()
    assert (result.model, result.intact, result.verified) == ("testapp.document", True, 90)


def test_the_verify_task_runs_on_a_worker_and_keeps_its_verdict(broker, worker):
    for number in range(5):
        Document.objects.create(title=f"doc {number}")
    wait_for(lambda: AuditEntry.objects.count() >= 5 and quiet(broker), 60, "5 entries")
    third = AuditEntry.objects.order_by("id")[2]
    AuditEntry.objects.filter(pk=third.pk).update(changes={})

    celery_app.send_task("auditq.tasks.verify", queue=QUEUE)

    chain = AuditChain.objects.filter(content_type=ContentType.objects.get_for_model(Document))
    wait_for(lambda: chain.get().verified_at is not None, 60, "the verification to run")
    found = chain.get()
    assert (found.intact, found.broken_entry_id, found.verified_entries) == (False, third.pk, 2)
    said = f"auditq: chain testapp.document: broken at entry {third.pk}"
    wait_for(lambda: said in worker.log.read_text(), 10, "the ERROR line")
    lines = [line for line in worker.log.read_text().splitlines() if said in line]
    assert any("ERROR" in line for line in lines), lines
