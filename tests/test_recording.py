"""The worker side: outbox rows to consumers, exactly once, and a seam for new consumers."""

import logging
import re
from collections.abc import Iterator

import pytest
from django.db import transaction

from auditq import capture, disable_auditing, registry
from auditq.delivery import broker, recording
from auditq.models import AuditEntry, Outbox
from tests.testapp.models import Document, Plain, Player, Team, Ticket

pytestmark = pytest.mark.django_db(transaction=True)


class Spy:
    """A consumer that only the tests have: it tracks Document and Plain."""

    name = "spy"

    def __init__(self) -> None:
        self.received = []

    def models(self):
        return [Document, Plain]

    def capture(self, model, instance, action, changes, context, loaded):
        return {"title": instance.title} if instance is not None else None

    def squash(self, earlier, later, action, changes):
        return later

    def record(self, events, using):
        self.received.extend(events)


@pytest.fixture
def spy() -> Iterator[Spy]:
    consumer = Spy()
    registry.add_consumer(consumer)
    capture.connect(Plain)
    yield consumer
    registry.remove_consumer(consumer.name)


def test_a_new_consumer_plugs_in_without_touching_the_audit_trail(spy):
    document = Document.objects.create(title="both want it")
    plain = Plain.objects.create(title="only the spy tracks it")

    assert [(e.model, e.consumers["spy"]) for e in spy.received] == [
        ("testapp.document", {"title": "both want it"}),
        ("testapp.plain", {"title": "only the spy tracks it"}),
    ]
    [entry] = AuditEntry.objects.all()
    assert entry.object_pk == str(document.pk)
    # The same change has one id for every consumer.
    assert entry.event_id == spy.received[0].id
    assert spy.received[1].pk == plain.pk


def test_disable_auditing_drops_the_audit_consumer_only(spy):
    with disable_auditing():
        Document.objects.create(title="not audited")

    assert not AuditEntry.objects.exists()
    assert [e.consumers for e in spy.received] == [{"spy": {"title": "not audited"}}]


def test_a_row_is_consumed_once(undelivered):
    Document.objects.create(title="once")
    [row] = Outbox.objects.all()

    assert recording.record_rows([row.pk]) == 1
    assert recording.record_rows([row.pk]) == 0
    assert AuditEntry.objects.count() == 1


def test_a_row_replayed_from_a_copy_changes_nothing(undelivered):
    Document.objects.create(title="replayed")
    payload = Outbox.objects.get().payload
    recording.record_waiting()
    copy = Outbox.objects.create(payload=payload)

    assert recording.record_rows([copy.pk]) == 1
    assert AuditEntry.objects.count() == 1
    assert not Outbox.objects.exists()


def test_an_unreadable_row_stays_and_fails_loudly_while_the_others_are_delivered(undelivered):
    Document.objects.create(title="fine")
    good = Outbox.objects.get()
    bad = Outbox.objects.create(payload='{"v": 99}')

    with pytest.raises(ValueError, match=f"outbox row {bad.pk}: .*version 99"):
        recording.record_rows([good.pk, bad.pk])

    assert list(Outbox.objects.values_list("pk", flat=True)) == [bad.pk]
    assert AuditEntry.objects.count() == 1


def test_a_row_for_a_consumer_this_worker_lacks_stays(spy, undelivered):
    Plain.objects.create(title="spy only")
    registry.remove_consumer("spy")
    [row] = Outbox.objects.all()

    with pytest.raises(ValueError, match="consumers this worker does not have: \\['spy'\\]"):
        recording.record_rows([row.pk])
    assert Outbox.objects.filter(pk=row.pk).exists()


def test_each_delivered_batch_is_one_info_line(undelivered, caplog, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)  # callback runs' tasks
    with transaction.atomic():
        Document.objects.create(title="a")
        Document.objects.create(title="b")
        Ticket.objects.create(subject="done", state="closed")
        Player.objects.create(name="p", team=Team.objects.create(name="t"))
    Document.objects.create(title="c")

    with caplog.at_level(logging.INFO, logger="auditq"):
        recording.record_waiting()  # both rows, one transaction
        recording.record_waiting()  # nothing left: no line

    [line] = [r.getMessage() for r in caplog.records if r.name == "auditq"]
    assert re.fullmatch(
        r"auditq: recorded 2 outbox rows in \d+\.\d ms: 5 changes "
        r"\(audit 3, callbacks 1, counters 1\)",
        line,
    ), line
