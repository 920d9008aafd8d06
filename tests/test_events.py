"""The payload shape: what a transaction's changes look like on their way to the worker."""

import json

import pytest

from auditq.stream import events
from auditq.stream.context import AuditContext


def change(number: int, context: AuditContext) -> events.Change:
    return events.Change(
        model="testapp.document",
        pk=number,
        repr=f"doc {number}",
        action="update",
        changes={"title": ["old", f"new {number}"]},
        at=1_700_000_000.5,
        context=context,
        consumers={"audit": 1},
    )


def test_a_payload_reads_back_as_the_events_it_holds():
    alice = AuditContext(actor=7, request_id="req-1", extra={"reason": "import"})
    bob = AuditContext(actor=8)
    payload = events.dumps([change(1, alice), change(2, bob), change(3, alice)])

    read = events.loads(payload)

    assert [(e.pk, e.repr, e.changes["title"][1]) for e in read] == [
        (1, "doc 1", "new 1"),
        (2, "doc 2", "new 2"),
        (3, "doc 3", "new 3"),
    ]
    assert [e.actor_id for e in read] == [7, 8, 7]
    assert (read[0].request_id, read[0].context) == ("req-1", {"reason": "import"})
    assert read[0].occurred_at.timestamp() == 1_700_000_000.5
    assert read[0].consumers == {"audit": 1}
    # Each context is written once, however many changes share it.
    assert len(json.loads(payload)["contexts"]) == 2


def test_event_ids_are_fixed_by_the_payload_and_unique():
    context = AuditContext()
    payload = events.dumps([change(n, context) for n in range(1000)])
    other = events.dumps([change(n, context) for n in range(1000)])

    first = [e.id for e in events.loads(payload)]
    assert first == [e.id for e in events.loads(payload)]  # a redelivery sees the same ids
    assert len(set(first) | {e.id for e in events.loads(other)}) == 2000
    assert {e.version for e in first} == {4}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not JSON"),
        ('{"v": 2, "events": []}', "version 2; this auditq reads version 3"),
        ("[]", "version None"),
    ],
)
def test_a_payload_of_another_shape_is_refused(payload, message):
    with pytest.raises(events.PayloadError, match=message):
        events.loads(payload)
