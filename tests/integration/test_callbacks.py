"""Callbacks against Redis and real ``celery worker`` processes."""

import json
import os

import pytest

from auditq.consumers.callbacks import RUN
from auditq.delivery import recording
from auditq.delivery.broker import send
from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE, wait_for
from tests.helpers import tables_holding
from tests.testapp.handlers import ticket_closed
from tests.testapp.models import Account, Chosen, Effect, Ticket, Vault


def name(func) -> str:
    return f"{func.__module__}.{func.__qualname__}"


pytestmark = pytest.mark.django_db(transaction=True)


def quiet(broker) -> bool:
    """Nothing left anywhere: no outbox row, no message, no run waiting."""
    return (
        not Outbox.objects.exists()
        and broker.depth(QUEUE) == 0
        and not CallbackRun.objects.filter(status="pending").exists()
    )


def test_a_handler_runs_in_a_worker_process_once(broker, worker):
    ticket = Ticket.objects.create(subject="printer", state="closed")

    effect = wait_for(lambda: Effect.objects.filter(handler="closed").first(), 30, "the handler")
    assert effect.object_pk == str(ticket.pk)
    assert effect.pid != os.getpid()
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert Effect.objects.filter(handler="closed").count() == 1
    assert CallbackRun.objects.get().status == "succeeded"


def test_a_false_when_sends_nothing_to_the_broker(broker, worker):
    Ticket.objects.create(subject="printer", state="open")
    Account.objects.create(name="marker")  # audited, no handler wants it

    wait_for(lambda: AuditEntry.objects.filter(object_repr="marker").exists(), 30, "the marker")
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert not CallbackRun.objects.exists()
    assert not Effect.objects.exists()


def test_a_run_delivered_twice_at_once_has_one_effect(broker, workers):
    Ticket.objects.create(subject="twice", state="closed")
    recording.record_waiting()  # here: the run is written and its message published
    run = CallbackRun.objects.get()
    send(RUN, (run.pk, "default"), app=celery_app, queue=QUEUE)  # and once more
    assert broker.depth(QUEUE) == 2

    workers()
    workers()
    wait_for(lambda: quiet(broker), 30, "both messages")
    assert Effect.objects.filter(handler="closed").count() == 1
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("succeeded", 1)


def test_failing_twice_then_succeeding_has_one_effect_and_three_attempts(broker, worker):
    ticket = Ticket.objects.create(subject="flaky scanner")

    run = wait_for(
        lambda: CallbackRun.objects.filter(status="succeeded").first(), 60, "the third attempt"
    )
    assert run.attempts == 3
    assert [e["error"] for e in run.errors] == [
        "RuntimeError: flaky attempt 1",
        "RuntimeError: flaky attempt 2",
    ]
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert list(Effect.objects.filter(handler="flaky").values_list("object_pk", flat=True)) == [
        str(ticket.pk)
    ]


def test_the_audit_entry_is_recorded_while_its_handler_keeps_failing(broker, worker):
    account = Account.objects.create(name="broken forever")

    run = wait_for(lambda: CallbackRun.objects.filter(status="failed").first(), 60, "give-up")
    assert run.last_error == "ValueError: cannot handle broken forever"
    assert AuditEntry.objects.for_object(account).count() == 1


def test_a_row_deleted_before_its_handler_ran_is_skipped_and_recorded(broker, workers):
    ticket = Ticket.objects.create(subject="gone", state="closed")
    Ticket.objects.filter(pk=ticket.pk).delete()  # a queryset delete: no handler of its own
    workers()

    run = wait_for(lambda: CallbackRun.objects.filter(status="skipped").first(), 30, "the skip")
    assert (run.handler, run.note) == (name(ticket_closed), "skipped: the row no longer exists")
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    # The delete had a handler of its own, which ran; the save's never did.
    assert list(Effect.objects.values_list("handler", flat=True)) == ["deleted"]


def test_a_worker_hands_masked_values_in_clear_that_travelled_only_sealed(broker, workers):
    secret = "open-sesame-4711"
    Vault.objects.create(label="strongroom", secret=secret)
    assert secret not in Outbox.objects.get().payload
    recording.record_waiting()  # here: the run is written and its message published
    run = CallbackRun.objects.get()
    [message] = broker.messages(QUEUE)
    body = message.body
    assert json.loads(body)[0] == [run.pk, "default"]  # the run's key, nothing else
    assert tables_holding(secret) == []

    workers()
    effect = wait_for(lambda: Effect.objects.filter(handler="vault saved").first(), 30, "it")
    assert effect.pid != os.getpid()
    assert effect.seen["changes"]["secret"] == [None, secret]
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    run.refresh_from_db()
    assert (run.status, run.sealed) == ("succeeded", "")
    assert AuditEntry.objects.get(event_id=effect.event_id).changes["secret"] == [None, "***"]
    assert tables_holding(secret) == []


def test_a_handlers_change_in_a_worker_names_the_change_that_caused_it(broker, worker):
    chosen = Chosen.objects.create(name="cascade in a worker")

    effect = wait_for(
        lambda: AuditEntry.objects.filter(object_repr="account of cascade in a worker").first(),
        60,
        "the handler's entry",
    )
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    cause = AuditEntry.objects.for_object(chosen).get()
    assert effect.context["caused_by"] == str(cause.event_id)
    assert list(AuditEntry.objects.filter(context__caused_by=str(cause.event_id))) == [effect]
