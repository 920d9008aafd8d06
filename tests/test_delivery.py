"""The publisher thread: the request hands over a key, the thread publishes, in batches."""

import threading

import pytest
from django.db import DatabaseError, transaction

from auditq import delivery
from auditq.models import AuditEntry, Outbox
from tests.celery_app import app as celery_app
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_rows_waiting_together_are_published_as_one_message(published, monkeypatch):
    gate = threading.Event()
    original = delivery.publish

    def slow(outbox_ids, using="default", app=None):
        gate.wait(10)
        original(outbox_ids, using, app)

    monkeypatch.setattr(delivery, "publish", slow)
    Document.objects.create(title="first")  # the thread takes it and waits at the gate
    for number in range(5):
        with transaction.atomic():
            Document.objects.create(title=str(number))
    gate.set()

    ids = sorted(Outbox.objects.values_list("id", flat=True))
    messages = published()
    assert sorted(i for batch, _ in messages for i in batch) == ids
    assert [len(batch) for batch, _ in messages] == [1, 5]


def test_a_failed_publish_is_logged_and_leaves_the_row(published, monkeypatch, caplog):
    def broken(outbox_ids, using="default", app=None):
        raise delivery.BrokerUnavailable("ConnectionError: refused")

    monkeypatch.setattr(delivery, "publish", broken)
    Document.objects.create(title="kept for the relay")

    assert delivery.flush(timeout=10)
    assert Outbox.objects.count() == 1
    assert "the relay will deliver them" in caplog.text


def test_flush_times_out_while_a_publish_is_stuck(published, monkeypatch):
    gate = threading.Event()

    def stuck(outbox_ids, using="default", app=None):
        gate.wait(10)

    monkeypatch.setattr(delivery, "publish", stuck)
    Document.objects.create(title="stuck")

    assert delivery.flush(timeout=0.2) is False
    gate.set()
    assert delivery.flush(timeout=10) is True


def test_an_outbox_row_that_cannot_be_written_rolls_the_change_back(monkeypatch):
    def broken(connection, pendings):
        raise TypeError("not serializable")

    monkeypatch.setattr(delivery, "_store", broken)
    with pytest.raises(DatabaseError, match="auditq could not write its outbox row"):
        Document.objects.create(title="never committed")
    monkeypatch.undo()

    assert not Document.objects.exists()
    Document.objects.create(title="the connection still works")
    assert Outbox.objects.count() + AuditEntry.objects.count() >= 1


def test_the_publisher_thread_uses_the_committing_threads_celery_app(published, monkeypatch):
    """Celery's current app is per thread: the publisher must not fall back to the default."""
    seen = []
    original = delivery.publish

    def record(outbox_ids, using="default", app=None):
        seen.append((threading.current_thread().name, app))
        original(outbox_ids, using, app)

    monkeypatch.setattr(delivery, "publish", record)
    Document.objects.create(title="x")
    published()

    assert seen == [("auditq-publisher", celery_app)]
