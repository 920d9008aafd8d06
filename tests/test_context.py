"""``audit_context()`` and ``disable_auditing()``: validation, nesting, threads."""

import contextvars
import threading
import uuid

import pytest

from auditq import audit_context, disable_auditing
from auditq.stream.context import current, resolve_actor


def test_outside_any_block_the_context_is_empty_and_enabled():
    assert current().actor is None
    assert current().enabled


def test_blocks_nest_and_restore():
    with audit_context(actor=1, reason="outer"):
        with audit_context(request_id="abc", step=2), disable_auditing():
            inner = current()
        after = current()

    assert (inner.actor, inner.request_id, dict(inner.extra), inner.enabled) == (
        1,
        "abc",
        {"reason": "outer", "step": 2},
        False,
    )
    assert (after.request_id, dict(after.extra), after.enabled) == (None, {"reason": "outer"}, True)
    assert current().actor is None


def test_extra_values_are_stored_json_safe():
    key = uuid.uuid4()
    with audit_context(key=key, things={1, 2}):
        assert dict(current().extra) == {"key": str(key), "things": [1, 2]}


def test_extra_keys_named_like_masked_fields_are_kept_masked(settings):
    settings.AUDITQ = {**settings.AUDITQ, "MASKED_FIELDS": ["*iban*"]}
    with audit_context(api_token="tok-1", payer={"IBAN": "DE89", "name": "Ada"}, batch=4):
        assert dict(current().extra) == {
            "api_token": "***",
            "payer": {"IBAN": "***", "name": "Ada"},
            "batch": 4,
        }


def test_a_copied_context_follows_work_into_a_thread():
    seen = []
    with audit_context(actor=7):
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(lambda: seen.append(current().actor),))
    thread.start()
    thread.join()

    assert seen == [7]
    assert current().actor is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"actor": 1.5}, r"actor=\.\.\.\) takes a user"),
        ({"actor": True}, r"actor=\.\.\.\) takes a user"),
        ({"remote_addr": "localhost"}, r"remote_addr=\.\.\.\) must be an IP address"),
        ({"request_id": "has space"}, r"request_id=\.\.\.\) must be 1 to 200 characters"),
        ({"request_id": "x" * 201}, r"request_id=\.\.\.\) must be 1 to 200 characters"),
    ],
)
def test_bad_arguments_name_the_field(arguments, message):
    with pytest.raises(ValueError, match=message), audit_context(**arguments):
        pass


def test_an_unsaved_or_anonymous_actor_has_no_key(django_user_model):
    from django.contrib.auth.models import AnonymousUser

    with audit_context(actor=AnonymousUser()):
        assert resolve_actor(current().actor) == (None, "")
