"""The audit context follows a task: the header it travels in, and the worker's side.

Here tasks run in this process: eagerly, or through Celery's own tracer as a worker runs
a message (``traced``); ``tests/integration/test_task_context.py`` sends them to real
workers through Redis.
"""

import json
import logging

import pytest
from celery.app.trace import build_tracer
from django.core.exceptions import SynchronousOnlyOperation
from django.utils.functional import SimpleLazyObject

from auditq import audit_context
from auditq.delivery import task_context
from auditq.models import AuditEntry
from auditq.stream.context import HEADER, current, from_header, to_header
from tests.celery_app import app as celery_app
from tests.testapp import tasks
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)

RETITLE = "tests.testapp.tasks.retitle"


@pytest.fixture
def ada(django_user_model):
    return django_user_model.objects.create(username="ada")


def traced(task, args, headers: dict) -> None:
    """Run ``task`` as a worker runs a message with these headers: Celery's tracer, its
    prerun and postrun signals, not eager."""
    request = {"id": "t-1", "task": task.name, "delivery_info": {}, **headers}
    tracer = build_tracer(task.name, task, app=celery_app, eager=False, propagate=True)
    tracer("t-1", args, {}, request)


def test_the_header_holds_actor_request_id_and_extra_keys_as_json(ada):
    with audit_context(actor=ada, remote_addr="203.0.113.9", request_id="req-1", batch=7):
        header = to_header()

    assert header == {
        "actor": ada.pk,
        "actor_repr": "ada",
        "request_id": "req-1",
        "extra": {"batch": 7},
    }
    assert json.loads(json.dumps(header)) == header


def test_nothing_to_carry_is_no_header():
    assert to_header() is None
    with audit_context(remote_addr="203.0.113.9"):
        assert to_header() is None  # the address stays with the request


def test_a_header_restores_the_context_without_loading_the_user(ada, django_assert_num_queries):
    header = {"actor": ada.pk, "actor_repr": "ada", "request_id": "req-1", "extra": {"b": 1}}

    with django_assert_num_queries(0), from_header(header, via_task="t") as context:
        assert to_header(context) == {**header, "extra": {"b": 1, "via_task": "t"}}
    assert to_header() is None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("text", "must be a JSON object"),
        ({"extra": []}, r"\['extra'\] must be a JSON object"),
        ({"actor": 1.5}, r"\['actor'\] must be a user's key"),
        ({"actor": True}, r"\['actor'\] must be a user's key"),
        ({"request_id": "has space"}, r"request_id=\.\.\.\) must be 1 to 200 characters"),
    ],
)
def test_a_malformed_header_is_refused(header, message):
    with pytest.raises(ValueError, match=message):
        from_header(header)


def test_a_task_run_by_a_worker_records_the_senders_actor_request_id_and_via_task(ada):
    document = Document.objects.create(title="before")
    with audit_context(actor=ada, request_id="req-9", reason="bulk fix"):
        header = to_header()

    traced(tasks.retitle, (document.pk, "after"), {HEADER: header})

    entry = AuditEntry.objects.for_object(document).last()
    assert entry.changes == {"title": ["before", "after"]}
    assert (entry.actor_id, entry.actor_repr, entry.request_id) == (ada.pk, "ada", "req-9")
    assert entry.context == {"reason": "bulk fix", "via_task": RETITLE}
    assert to_header() is None  # left after the task


def test_a_task_without_the_header_runs_with_no_context():
    document = Document.objects.create(title="before")

    traced(tasks.retitle, (document.pk, "after"), {})

    entry = AuditEntry.objects.for_object(document).last()
    assert (entry.actor_id, entry.request_id, entry.context) == (None, "", {})


def test_a_malformed_header_is_logged_and_the_task_runs_without_it(caplog):
    document = Document.objects.create(title="before")

    with caplog.at_level(logging.WARNING, logger="auditq"):
        traced(tasks.retitle, (document.pk, "after"), {HEADER: {"actor": [1]}})

    assert "ignores its auditq_context header" in caplog.text
    assert AuditEntry.objects.for_object(document).last().context == {}


def test_an_eager_task_keeps_the_senders_context_and_adds_via_task(ada):
    document = Document.objects.create(title="before")

    with audit_context(actor=ada, request_id="req-3", reason="r"):
        tasks.retitle.delay(document.pk, "after")
        after = current()
        inside = tasks.seen.delay().get()

    assert dict(after.extra) == {"reason": "r"}  # left, not nested twice
    assert inside == {
        "actor": [ada.pk, "ada"],
        "request_id": "req-3",
        "extra": {"reason": "r", "via_task": "tests.testapp.tasks.seen"},
    }
    entry = AuditEntry.objects.for_object(document).last()
    assert (entry.actor_id, entry.request_id) == (ada.pk, "req-3")
    assert entry.context == {"reason": "r", "via_task": RETITLE}


def test_an_eager_task_outside_any_context_gets_none():
    assert tasks.seen.delay().get() == {"actor": [None, ""], "request_id": None, "extra": {}}


def test_the_header_goes_into_the_message_headers(ada):
    headers: dict = {"id": "t-1"}
    with audit_context(actor=ada, request_id="req-5"):
        task_context.add_header(sender=RETITLE, headers=headers)

    assert headers[HEADER] == {"actor": ada.pk, "actor_repr": "ada", "request_id": "req-5"}


@pytest.mark.parametrize("mine", [{"request_id": "given"}, None])
def test_a_header_given_by_the_sender_is_kept(ada, mine):
    headers = {HEADER: mine}  # None: auditq's own messages for its rows (broker.send)
    with audit_context(actor=ada, request_id="req-5"):
        task_context.add_header(sender=RETITLE, headers=headers)

    assert headers[HEADER] is mine


def test_a_null_header_runs_the_task_with_no_context():
    chosen = Document.objects.create(title="before")

    traced(tasks.retitle, (chosen.pk, "after"), {HEADER: None})

    assert AuditEntry.objects.for_object(chosen).last().context == {}


def test_an_actor_that_cannot_be_read_here_is_left_out_and_logged(caplog):
    def async_only():
        raise SynchronousOnlyOperation("You cannot call this from an async context")

    headers: dict = {}
    with (
        caplog.at_level(logging.WARNING, logger="auditq"),
        audit_context(actor=SimpleLazyObject(async_only), request_id="req-6"),
    ):
        task_context.add_header(sender=RETITLE, headers=headers)

    assert headers[HEADER] == {"request_id": "req-6"}
    assert f"task {RETITLE} is sent without its actor" in caplog.text
