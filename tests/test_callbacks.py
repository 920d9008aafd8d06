"""``@after_save`` / ``@after_delete``: offloaded, effectively once, retried, attributed.

Tasks run eagerly here (in this process); ``tests/integration/test_callbacks.py`` runs
them in real workers.
"""

import time

import pytest
from django.db import connection, transaction

from auditq import after_save, audit_context, callbacks, registry
from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.conftest import wait_for
from tests.testapp import handlers
from tests.testapp.models import Account, Document, Effect, Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def name(func) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def test_a_handler_gets_the_instance_as_saved_and_the_change():
    ticket = Ticket.objects.create(subject="printer", state="open")
    ticket.state = "closed"
    ticket.save()

    [effect] = Effect.objects.filter(handler="closed")
    assert effect.object_pk == str(ticket.pk)
    assert effect.seen == {"state": "closed", "changes": {"state": ["open", "closed"]}}
    [run] = CallbackRun.objects.filter(handler=name(handlers.ticket_closed))
    assert (run.status, run.attempts, run.object_pk) == ("succeeded", 1, str(ticket.pk))
    assert str(effect.event_id) == str(run.event_id)


def test_a_false_when_sends_nothing(undelivered):
    Ticket.objects.create(subject="printer", state="open")

    assert not Outbox.objects.exists()  # nobody wanted the change: no event, no row
    Account.objects.create(name="fine")
    [event] = Outbox.objects.last().events
    assert event.consumers == {"audit": 1}


def test_a_model_with_handlers_is_tracked_without_being_audited():
    Ticket.objects.create(subject="x", state="closed")

    assert Effect.objects.filter(handler="closed").count() == 1
    assert not AuditEntry.objects.filter(object_repr="x").exists()


def test_a_rolled_back_change_runs_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        Ticket.objects.create(subject="ghost", state="closed")
        raise RuntimeError

    assert not Effect.objects.exists()
    assert not CallbackRun.objects.exists()


def test_after_delete_gets_the_last_values():
    ticket = Ticket.objects.create(subject="old printer")
    pk = ticket.pk
    ticket.delete()

    [effect] = Effect.objects.filter(handler="deleted")
    assert (effect.object_pk, effect.seen) == (str(pk), {"subject": "old printer"})


def test_a_failing_handler_is_retried_with_back_off_then_succeeds_once():
    ticket = Ticket.objects.create(subject="flaky printer")
    run = CallbackRun.objects.get(handler=name(handlers.flaky))
    assert (run.status, run.attempts, run.last_error) == (
        "pending",
        1,
        "RuntimeError: flaky attempt 1",
    )
    assert run.next_attempt_at > run.created_at  # backed off, not run again at once

    def retried() -> bool:
        callbacks.publish_due("default")
        return CallbackRun.objects.get(pk=run.pk).status == "succeeded"

    wait_for(retried, 10, "the third attempt")
    run.refresh_from_db()
    assert run.attempts == 3
    assert [e["error"] for e in run.errors] == [
        "RuntimeError: flaky attempt 1",
        "RuntimeError: flaky attempt 2",
    ]
    assert "Traceback" in run.errors[0]["traceback"]
    # A failed attempt's writes roll back with it: only the last try's remain.
    assert Effect.objects.filter(handler="flaky-try").count() == 1
    assert list(Effect.objects.filter(handler="flaky").values_list("object_pk", flat=True)) == [
        str(ticket.pk)
    ]


def test_a_handler_that_keeps_failing_is_marked_failed_and_the_entry_is_recorded():
    account = Account.objects.create(name="broken account")

    def failed() -> bool:
        callbacks.publish_due("default")
        return CallbackRun.objects.get().status == "failed"

    wait_for(failed, 10, "both attempts to fail")
    run = CallbackRun.objects.get()
    assert (run.attempts, run.note) == (2, "gave up after 2 attempts")
    assert run.last_error == "ValueError: cannot handle broken account"
    assert AuditEntry.objects.for_object(account).count() == 1


def test_a_second_delivery_of_a_run_changes_nothing():
    Ticket.objects.create(subject="once", state="closed")
    run = CallbackRun.objects.get()

    assert callbacks.run(run.pk, "default") == "succeeded"
    assert Effect.objects.filter(handler="closed").count() == 1


def test_a_vanished_row_is_skipped_and_that_is_recorded(undelivered):
    ticket = Ticket.objects.create(subject="gone", state="closed")
    Ticket.objects.filter(pk=ticket.pk).delete()  # no signal: the handler's run is pending

    from auditq import recording

    recording.consume_waiting()
    run = CallbackRun.objects.get(handler=name(handlers.ticket_closed))
    assert callbacks.run(run.pk, "default") == "skipped"
    run.refresh_from_db()
    assert run.note == "skipped: the row no longer exists"
    assert not Effect.objects.exists()


def test_the_handler_runs_in_the_changes_context(django_user_model):
    user = django_user_model.objects.create(username="ada")
    with audit_context(actor=user, request_id="req-42", reason="triage"):
        ticket = Ticket.objects.create(subject="urgent", state="escalated")

    [effect] = Effect.objects.filter(handler="escalated")
    assert effect.seen == {"actor": user.pk, "request_id": "req-42"}
    [entry] = AuditEntry.objects.filter(object_repr=f"escalation of {ticket.subject}")
    assert (entry.actor_id, entry.actor_repr, entry.request_id) == (user.pk, "ada", "req-42")
    assert entry.context == {"reason": "triage", "via_callback": name(handlers.escalate)}


def test_masked_values_stay_masked_in_the_event():
    Ticket.objects.create(subject="s", state="closed", token="tok-secret")

    [effect] = Effect.objects.filter(handler="closed")
    assert effect.seen["changes"]["token"] == [None, "***"]
    assert "tok-secret" not in str(CallbackRun.objects.get().event)


def test_retry_makes_a_failed_run_due_again():
    Account.objects.create(name="broken again")
    run = CallbackRun.objects.get()
    run.status, run.attempts = "failed", 2
    run.save()

    assert callbacks.retry(CallbackRun.objects.all()) == 1
    run.refresh_from_db()
    assert (run.status, run.max_attempts, run.published_at) == ("pending", 3, None)
    callbacks.publish_due("default")
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("failed", 3)  # it still fails, and says so


def test_an_unknown_handler_fails_its_run_with_a_clear_note(undelivered):
    Ticket.objects.create(subject="x", state="closed")
    from auditq import recording

    recording.consume_waiting()
    run = CallbackRun.objects.get(handler=name(handlers.ticket_closed))
    run.handler = "gone.module.handler"
    run.save()

    assert callbacks.run(run.pk, "default") == "failed"
    run.refresh_from_db()
    assert run.note == "no handler 'gone.module.handler' here"


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"model": object}, TypeError, "takes a model class first"),
        ({"when": "yes"}, TypeError, r"when=\.\.\.\) takes a function"),
        ({"retries": -1}, ValueError, r"retries=\.\.\.\) takes a whole number"),
        ({"backoff": 0}, ValueError, r"backoff=\.\.\.\) takes seconds"),
        ({"queue": ""}, ValueError, r"queue=\.\.\.\) takes a queue name"),
    ],
)
def test_bad_arguments_are_refused_at_import(arguments, error, message):
    arguments = {"model": Document, **arguments}
    with pytest.raises(error, match=message):
        after_save(arguments.pop("model"), **arguments)


def test_a_nested_function_cannot_be_a_handler():
    def local(instance, event): ...

    with pytest.raises(ValueError, match="must be module-level functions"):
        after_save(Document)(local)
    assert registry.handlers_for(Document, "save") == ()


def test_handlers_do_not_slow_a_when_false_save_with_queries(undelivered):
    ticket = Ticket.objects.create(subject="quiet")
    ticket = Ticket.objects.get(pk=ticket.pk)
    ticket.subject = "still quiet"
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        ticket.save()
    assert [q["sql"].split()[0] for q in queries.captured_queries if "SELECT" in q["sql"][:6]] == []
    time.sleep(0)  # nothing is waiting: the save sent nothing anywhere


def seat_taken(seat, event):
    Effect.objects.create(
        handler="seat", object_pk=seat.holder, event_id=event.id, pid=0, seen={"pk": event.pk}
    )


def test_a_model_with_a_composite_key_gets_its_handlers_instance():
    from tests.shapesapp.models import Seat

    after_save(Seat)(seat_taken)
    try:
        Seat.objects.create(row=1, number=-54, holder="Ada")
    finally:
        registry.remove_handler(name(seat_taken))

    [effect] = Effect.objects.filter(handler="seat")
    assert (effect.object_pk, effect.seen) == ("Ada", {"pk": [1, -54]})
    assert CallbackRun.objects.get(handler=name(seat_taken)).status == "succeeded"
