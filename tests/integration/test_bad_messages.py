"""Broken broker messages, on the real stack: a worker process refuses them, logs them,
keeps running, and records the changes queued behind them. Only JSON is accepted: a
pickled message is never unpickled."""

import pickle
import uuid

import pytest

from auditq.models import AuditEntry
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE, wait_for
from tests.integration.test_delivery import quiet
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


class Trap:
    """Unpickling this creates a file: proof that a pickled message was opened."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def raw(body: bytes, content_type: str, task: str = "auditq.tasks.deliver") -> None:
    """Put a message on the test queue as another program could: task headers of
    Celery's protocol 2, any body."""
    task_id = str(uuid.uuid4())
    with celery_app.producer_or_acquire() as producer:
        producer.publish(
            body,
            routing_key=QUEUE,
            exchange="",
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            headers={"lang": "py", "task": task, "id": task_id, "root_id": task_id},
            retry=True,
        )


def test_broken_messages_are_refused_and_the_changes_behind_them_recorded(workers, tmp_path):
    trap = tmp_path / "unpickled"
    worker = workers()

    raw(b"{not json", "application/json")
    raw(pickle.dumps(((Trap(str(trap)),), {}, {})), "application/x-python-serialize")
    raw(b'[["not an id"], {}, {}]', "application/json")
    raw(b'[[], {"using": "no-such-database"}, {}]', "application/json")
    raw(b'[[1], {"unexpected": true}, {}]', "application/json")
    raw(b"[[], {}, {}]", "application/json", task="auditq.tasks.no_such_task")
    documents = [Document.objects.create(title=f"behind {n}") for n in range(10)]

    wait_for(
        lambda: AuditEntry.objects.count() >= 10 and quiet(),
        60,
        "the changes behind the broken messages and a quiet system",
    )
    assert AuditEntry.objects.count() == 10
    assert {e.object_pk for e in AuditEntry.objects.all()} == {str(d.pk) for d in documents}
    assert worker.process.poll() is None and worker.answers()  # still running
    assert not trap.exists()  # the pickled message was never opened
    log = worker.log.read_text()
    assert "ContentDisallowed" in log or "disallowed" in log.lower(), worker.tail(60)
    assert "no_such_task" in log, worker.tail(60)
