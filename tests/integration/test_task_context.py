"""The audit context follows tasks into real ``celery worker`` processes through Redis."""

import json

import pytest
from asgiref.sync import async_to_sync

from auditq import audit_context
from auditq.delivery import recording
from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.conftest import QUEUE, wait_for
from tests.testapp import tasks
from tests.testapp.models import Document, Ticket

pytestmark = pytest.mark.django_db(transaction=True)

RETITLE = "tests.testapp.tasks.retitle"


def quiet(broker) -> bool:
    """Nothing left to do: no message waiting, no change undelivered, no run pending."""
    return (
        broker.depth(QUEUE) == 0
        and not Outbox.objects.exists()
        and not CallbackRun.objects.filter(status="pending").exists()
    )


def retitled(document: Document, title: str, broker) -> AuditEntry:
    """Wait for the entry of ``document``'s change to ``title``, then for a quiet system;
    return the only such entry."""
    found = AuditEntry.objects.for_object(document).filter(changes__title__1=title)
    wait_for(found.exists, 60, f"the entry of {title!r}")
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    [entry] = found
    return entry


def test_a_task_sent_from_a_request_is_recorded_with_its_user_and_request_id(
    client, django_user_model, broker, worker
):
    user = django_user_model.objects.create(username="ada")
    client.force_login(user)
    document = Document.objects.create(title="before")

    response = client.post(
        f"/documents/{document.pk}/title-in-a-task/",
        {"title": "after"},
        HTTP_X_REQUEST_ID="req-from-view",
    )

    assert response.status_code == 200
    entry = retitled(document, "after", broker)
    assert (entry.actor_id, entry.actor_repr) == (user.pk, "ada")
    assert entry.request_id == "req-from-view"
    assert entry.context == {"via_task": RETITLE}
    assert entry.remote_addr is None  # the address stays with the request


def test_apply_async_carries_the_actor_request_id_and_extra_keys(django_user_model, broker, worker):
    user = django_user_model.objects.create(username="grace")
    document = Document.objects.create(title="before")

    with audit_context(actor=user, request_id="job-7", reason="nightly fix"):
        tasks.retitle.apply_async((document.pk, "fixed"), countdown=0)

    entry = retitled(document, "fixed", broker)
    assert (entry.actor_id, entry.actor_repr, entry.request_id) == (user.pk, "grace", "job-7")
    assert entry.context == {"reason": "nightly fix", "via_task": RETITLE}


def test_a_task_sent_outside_any_context_records_none(broker, worker):
    document = Document.objects.create(title="before")

    tasks.retitle.delay(document.pk, "plain")

    entry = retitled(document, "plain", broker)
    assert (entry.actor_id, entry.request_id, entry.context) == (None, "", {})


def retitled_like(repr_: str, broker) -> AuditEntry:
    """Wait for the entry of the object with this repr, then for a quiet system."""
    found = wait_for(lambda: AuditEntry.objects.filter(object_repr=repr_).first(), 60, repr_)
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    return found


def test_the_message_carries_the_context_as_a_json_header(broker, django_user_model):
    user = django_user_model.objects.create(username="ada")

    with audit_context(actor=user, request_id="req-1", batch=3):
        tasks.retitle.delay(1, "x")

    [message] = broker.messages(QUEUE)
    assert message.headers["auditq_context"] == {
        "actor": user.pk,
        "actor_repr": "ada",
        "request_id": "req-1",
        "extra": {"batch": 3},
    }
    assert json.loads(message.body)[0] == [1, "x"]  # the body is JSON


def test_an_async_view_sends_the_request_id_without_the_unread_user(
    async_client, django_user_model, broker, caplog
):

    user = django_user_model.objects.create(username="ada")
    async_client.force_login(user)

    response = async_to_sync(async_client.post)(
        "/documents/1/title-in-a-task-async/", {"title": "x"}, headers={"X-Request-ID": "a-1"}
    )

    assert response.status_code == 200
    [message] = broker.messages(QUEUE)
    assert message.headers["auditq_context"] == {"request_id": "a-1"}
    assert f"task {RETITLE} is sent without its actor" in caplog.text


def test_relaying_inside_a_context_lends_it_to_no_row(broker, django_user_model, workers):
    ops = django_user_model.objects.create(username="ops")
    ticket = Ticket.objects.create(subject="urgent", state="escalated")  # no context
    with audit_context(actor=ops, request_id="relay-1", reason="relaying"):
        recording.record_waiting()  # records the change, sends the handler's run

    [message] = broker.messages(QUEUE)
    assert message.headers["auditq_context"] is None
    workers()
    effect = retitled_like(f"escalation of {ticket.subject}", broker)
    assert (effect.actor_id, effect.request_id) == (None, "")
    assert set(effect.context) == {"via_callback", "caused_by"}
