"""A huge value (``AUDITQ["MAX_VALUE_LENGTH"]``, README "Recording changes"): kept as its
first characters with a marker, never an exception in the save, never a huge outbox row."""

import json

import pytest

from auditq import conf
from auditq.checks import check_settings
from auditq.models import AuditEntry, Outbox
from auditq.stream.encoding import Unknown, decode, is_truncated, truncated
from tests.helpers import only_entry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)

TEN_MB = "x" * (10 * 1024 * 1024)
LIMIT = conf.Settings.MAX_VALUE_LENGTH


def test_a_ten_megabyte_text_is_saved_and_its_outbox_row_stays_small(undelivered):
    document = Document.objects.create(title="huge", body=TEN_MB)

    assert Document.objects.get(pk=document.pk).body == TEN_MB  # the save itself is whole
    [row] = Outbox.objects.all()
    assert len(row.payload) < LIMIT + 10_000
    [event] = json.loads(row.payload)["events"]
    body = event[4]["body"][1]
    assert body == {"truncated": True, "length": len(TEN_MB), "head": TEN_MB[:LIMIT]}


def test_the_entry_keeps_the_marker_and_the_short_fields_whole():
    document = Document.objects.create(title="huge", body=TEN_MB)
    document.body = "short again"
    document.save()

    created = only_entry(document, "create")
    assert created.changes["title"] == [None, "huge"]
    assert is_truncated(created.changes["body"][1])
    assert created.changes["body"][1]["length"] == len(TEN_MB)
    updated = only_entry(document, "update")
    assert updated.changes["body"][0]["head"] == TEN_MB[:LIMIT]
    assert updated.changes["body"][1] == "short again"


def test_time_travel_leaves_a_truncated_value_out():
    document = Document.objects.create(title="huge", body=TEN_MB)
    entry = only_entry(document, "create")

    state = AuditEntry.objects.as_of(document, entry.occurred_at)
    assert state["title"] == "huge"
    assert "body" not in state  # the trail does not hold it: left out, not guessed
    [(_, _, old, new)] = AuditEntry.objects.field_history(document, "body")
    assert old is None and is_truncated(new)


def test_a_large_json_value_is_truncated_as_its_json_text(settings):
    settings.AUDITQ = {**settings.AUDITQ, "MAX_VALUE_LENGTH": 50}
    data = {"items": list(range(100))}
    document = Document.objects.create(title="json", data=data)

    marker = only_entry(document, "create").changes["data"][1]
    text = json.dumps(data, separators=(",", ":"))
    assert marker == {"truncated": True, "length": len(text), "head": text[:50]}


def test_a_value_at_the_limit_is_kept_whole(settings):
    settings.AUDITQ = {**settings.AUDITQ, "MAX_VALUE_LENGTH": 10}
    document = Document.objects.create(title="0123456789", body="01234567890")

    changes = only_entry(document, "create").changes
    assert changes["title"] == [None, "0123456789"]
    assert changes["body"][1] == {"truncated": True, "length": 11, "head": "0123456789"}


def test_many_small_values_are_never_cut(settings):
    settings.AUDITQ = {**settings.AUDITQ, "MAX_VALUE_LENGTH": 100}
    from django.db import transaction

    with transaction.atomic():
        for number in range(50):
            Document.objects.create(title=f"document number {number}")

    assert AuditEntry.objects.count() == 50
    assert not any(is_truncated(e.changes["title"][1]) for e in AuditEntry.objects.all())


def test_short_values_and_numbers_are_never_markers():
    assert truncated("abc", 3) == "abc"
    assert truncated(10**30, 3) == 10**30
    assert truncated(None, 0) is None
    assert truncated([1, 2], 5) == [1, 2]
    assert truncated([1, 2, 3], 5) == {"truncated": True, "length": 7, "head": "[1,2,3"[:5]}


def test_decoding_a_marker_says_the_value_is_unknown():
    field = Document._meta.get_field("body")
    with pytest.raises(Unknown, match="body: only its first 3 characters were kept"):
        decode(field, truncated("abcdef", 3))


@pytest.mark.parametrize("value", [0, -1, "big", 1.5, True])
def test_a_bad_limit_is_a_system_check_error(settings, value):
    settings.AUDITQ = {"MAX_VALUE_LENGTH": value}

    [error] = check_settings()
    assert error.id == "auditq.E002"
    assert "MAX_VALUE_LENGTH" in error.msg
