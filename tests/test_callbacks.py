"""``@after_save`` / ``@after_delete``: offloaded, effectively once, retried, attributed.

Tasks run eagerly here (in this process); ``tests/integration/test_callbacks.py`` runs
them in real workers.
"""

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from auditq import after_save, audit_context, registry
from auditq.consumers import callbacks
from auditq.delivery import recording
from auditq.models import AuditEntry, CallbackRun, Outbox
from auditq.stream.sealing import unseal
from tests.conftest import wait_for
from tests.helpers import tables_holding
from tests.testapp import handlers
from tests.testapp.models import Account, Document, Effect, Ticket, Vault

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
    Ticket.objects.create(subject="printer", state="closed")  # the handler wants this one
    [event] = Outbox.objects.get().events
    assert event.consumers["callbacks"]["handlers"] == [name(handlers.ticket_closed)]
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
    with transaction.atomic():  # the same change, committed: its handler runs
        ticket = Ticket.objects.create(subject="real", state="closed")
    assert list(Effect.objects.values_list("handler", "object_pk")) == [("closed", str(ticket.pk))]
    assert CallbackRun.objects.get().handler == name(handlers.ticket_closed)


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

    recording.record_waiting()
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
    assert entry.context == {
        "reason": "triage",
        "via_callback": name(handlers.escalate),
        "caused_by": str(effect.event_id),
    }


def test_a_model_that_is_not_audited_has_its_masked_values_unmasked_for_handlers_too():
    Ticket.objects.create(subject="s", state="closed", token="tok-secret")

    [effect] = Effect.objects.filter(handler="closed")
    assert effect.seen["changes"]["token"] == [None, "tok-secret"]
    assert tables_holding("tok-secret") == []


SECRET = "open-sesame-4711"


def seen_by(handler: str) -> list[tuple[dict, dict]]:
    """What ``handler`` saw of each change, beside what the trail stored of it."""
    return [
        (effect.seen["changes"], AuditEntry.objects.get(event_id=effect.event_id).changes)
        for effect in Effect.objects.filter(handler=handler).order_by("pk")
    ]


def test_handlers_get_masked_values_in_clear_while_the_trail_keeps_them_masked():
    vault = Vault.objects.create(label="cellar", combination="12-34", secret=SECRET)
    vault = Vault.objects.get(pk=vault.pk)
    vault.secret = "rotated"
    vault.save()
    vault.delete()

    [(created, created_entry), (updated, updated_entry)] = seen_by("vault saved")
    assert (created["combination"], created["secret"]) == ([None, "12-34"], [None, SECRET])
    assert (created_entry["combination"], created_entry["secret"]) == ([None, "***"], [None, "***"])
    assert (updated, updated_entry) == ({"secret": [SECRET, "rotated"]}, {"secret": ["***", "***"]})
    [(deleted, deleted_entry)] = seen_by("vault deleted")
    assert (deleted["label"], deleted["secret"]) == (["cellar", None], ["rotated", None])
    assert (deleted_entry["label"], deleted_entry["secret"]) == (["cellar", None], ["***", None])


def test_a_failed_handler_quoting_masked_values_stores_and_logs_them_scrubbed(caplog):
    Vault.objects.create(label="leaky", combination="98-76-54", secret=SECRET)

    run = CallbackRun.objects.get(handler=f"{handlers.__name__}.vault_leaks")
    assert run.status == CallbackRun.Status.FAILED
    assert run.last_error == "ValueError: cannot open leaky with *** or ***"
    assert "cannot open leaky with *** or ***" in run.errors[-1]["traceback"]
    assert tables_holding("98-76-54") == tables_holding(SECRET) == []
    assert "98-76-54" not in caplog.text and SECRET not in caplog.text
    assert "cannot open leaky with *** or ***" in caplog.text


def test_masked_values_are_stored_only_sealed_and_forgotten_once_the_run_succeeds(undelivered):
    Vault.objects.create(label="attic", secret=SECRET)
    assert SECRET not in Outbox.objects.get().payload

    recording.record_waiting()
    run = CallbackRun.objects.get()
    assert unseal(run.sealed)["secret"] == [None, SECRET]
    assert set(tables_holding("attic")) == {"auditq_auditentry", "auditq_callbackrun"}
    assert tables_holding(SECRET) == []  # nowhere in clear, in any column

    assert callbacks.run(run.pk, "default") == "succeeded"
    run.refresh_from_db()
    assert run.sealed == ""
    [(changes, _)] = seen_by("vault saved")
    assert changes["secret"] == [None, SECRET]


def test_only_the_masked_fields_a_change_touched_are_sealed(undelivered):
    vault = Vault.objects.create(label="shed", secret=SECRET)
    vault.label = "barn"
    vault.save()
    vault.secret = "rotated"
    vault.save()

    events = [event for row in Outbox.objects.order_by("pk") for event in row.events]
    created, renamed, rotated = (event.consumers["callbacks"] for event in events)
    assert unseal(created["sealed"]) == {"combination": [None, ""], "secret": [None, SECRET]}
    assert renamed == {"handlers": [name(handlers.vault_saved)]}  # nothing to seal
    assert unseal(rotated["sealed"]) == {"secret": [SECRET, "rotated"]}


def test_a_run_sealed_with_another_key_fails_saying_so_and_works_once_it_is_a_fallback(
    undelivered,
):
    with override_settings(SECRET_KEY="the old key"):
        Vault.objects.create(label="safe", secret=SECRET)
    recording.record_waiting()
    run = CallbackRun.objects.get()

    assert callbacks.run(run.pk, "default") == "failed"  # retries=0: at once
    run.refresh_from_db()
    assert run.last_error == (
        "SealError: the masked values of this change were sealed with another SECRET_KEY: "
        "list the old key in SECRET_KEY_FALLBACKS, then retry the run"
    )
    assert run.sealed  # kept, for a retry by hand
    assert not Effect.objects.exists()

    with override_settings(SECRET_KEY_FALLBACKS=["the old key"]):
        assert callbacks.retry([run]) == 1
        assert callbacks.run(run.pk, "default") == "succeeded"
    [(changes, _)] = seen_by("vault saved")
    assert changes["secret"] == [None, SECRET]
    run.refresh_from_db()
    assert run.sealed == ""


def test_a_skipped_run_forgets_its_sealed_values_too(undelivered):
    vault = Vault.objects.create(label="gone", secret=SECRET)
    Vault.objects.filter(pk=vault.pk).delete()  # before the save's run
    recording.record_waiting()
    run = CallbackRun.objects.get(handler=name(handlers.vault_saved))
    assert run.sealed

    assert callbacks.run(run.pk, "default") == "skipped"
    run.refresh_from_db()
    assert run.sealed == ""


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
    Ticket.objects.create(subject="x", state="closed", token="tok")
    recording.record_waiting()
    run = CallbackRun.objects.get(handler=name(handlers.ticket_closed))
    run.handler = "gone.module.handler"
    run.save()

    assert callbacks.run(run.pk, "default") == "failed"
    run.refresh_from_db()
    assert run.note == "no handler 'gone.module.handler' here"
    assert unseal(run.sealed) == {"token": [None, "tok"]}  # kept, for when it is deployed


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"model": object}, TypeError, "takes a model class first"),
        ({"when": "yes"}, TypeError, r"when=\.\.\.\) takes a function"),
        ({"retries": -1}, ValueError, r"@after_save\(\): retries takes a whole number"),
        ({"backoff": 0}, ValueError, r"@after_save\(\): backoff takes seconds"),
        ({"backoff": True}, ValueError, r"@after_save\(\): backoff takes seconds"),
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

    with CaptureQueriesContext(connection) as queries:
        ticket.save()
    assert [q["sql"].split()[0] for q in queries.captured_queries if "SELECT" in q["sql"][:6]] == []
    assert any(q["sql"].startswith("UPDATE") for q in queries.captured_queries)  # the save's
    assert not Outbox.objects.exists()  # no handler wanted either save: nothing to deliver
    ticket.state = "closed"  # the same save, once the handler wants it, is delivered to it
    ticket.save()
    [event] = Outbox.objects.get().events
    assert event.consumers["callbacks"]["handlers"] == [name(handlers.ticket_closed)]


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


def place_saved(place, event):
    Effect.objects.create(
        handler="place",
        object_pk=str(place.pk),
        event_id=event.id,
        pid=0,
        seen={"class": type(place).__name__, "model": event.model},
    )


def test_a_childs_save_runs_its_multi_table_parents_handlers_once():
    from tests.shapesapp.models import Place, Restaurant, Shop

    after_save(Place)(place_saved)
    try:
        restaurant = Restaurant.objects.create(name="Noma")  # a child nobody tracks itself
        shop = Shop.objects.create(name="Corner")  # a child audited on its own trail too
    finally:
        registry.remove_handler(name(place_saved))

    effects = {e.object_pk: e.seen for e in Effect.objects.filter(handler="place")}
    # The parent's handler re-reads the parent's row: one run per save.
    assert effects == {
        str(restaurant.pk): {"class": "Place", "model": "shapesapp.place"},
        str(shop.pk): {"class": "Place", "model": "shapesapp.place"},
    }
