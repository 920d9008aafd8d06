"""auditq.diffs: an entry as a person reads it, with related objects named in few queries."""

import pytest
from django.contrib.contenttypes.models import ContentType

from auditq.diffs import diff_rows, title
from auditq.models import AuditEntry
from tests.testapp.models import Account, Document, Everything, Status, Tag

pytestmark = pytest.mark.django_db


def an_entry(obj, changes, action="update", actor_repr="") -> AuditEntry:
    """An unsaved entry about ``obj``, as a worker would write it."""
    return AuditEntry(
        content_type=ContentType.objects.get_for_model(obj),
        object_pk=str(obj.pk),
        action=action,
        changes=changes,
        actor_repr=actor_repr,
    )


def test_rows_of_each_kind():
    changes = {
        "title": [None, "x"],
        "status": ["short", "also short"],
        "body": ["x" * 100, "y" * 100],
        "data": [1, True],
        "tags": {"added": [], "removed": [2]},
    }
    rows = {row.field: row for row in diff_rows(an_entry(Document(pk=1), changes))}

    assert rows["title"].kind == "value" and rows["title"].old.text is None
    assert rows["status"].kind == "value"
    assert rows["body"].kind == "lines"
    assert [tag for tag, _ in rows["body"].lines] == ["hunk", "del", "add"]
    assert (rows["data"].old.text, rows["data"].new.text) == ("1", "true")
    assert rows["tags"].kind == "m2m"
    assert (rows["tags"].old.text, rows["tags"].new.text) == ("2", None)


def test_masked_values_stay_masked():
    [row] = diff_rows(an_entry(Account(pk=1), {"pin": ["***", "***"]}))

    assert row.old.masked and row.new.masked


def test_fields_by_verbose_name_and_choices_by_label():
    entry = an_entry(Everything(pk=1), {"status": [Status.DRAFT, Status.LIVE], "gone": [1, 2]})

    status, gone = diff_rows(entry)

    assert (status.label, status.old.choice, status.new.choice) == ("Status", "Draft", "Live")
    assert (status.old.text, status.new.text) == ("draft", "live")
    assert (gone.label, gone.new.choice) == ("gone", None)  # a field the model no longer has


def test_booleans_read_yes_and_no_json_values_stay_json():
    (flag,) = diff_rows(an_entry(Everything(pk=1), {"flag": [False, True]}))
    (data,) = diff_rows(an_entry(Document(pk=1), {"data": [False, True]}))

    assert (flag.old.boolean, flag.new.boolean) == (False, True)  # the admin's No / Yes
    assert (data.old.boolean, data.new.boolean) == (None, None)  # a JSON field's true


def test_related_objects_are_named_with_one_query_per_model(django_assert_num_queries):
    report, minutes = Document.objects.create(title="Report"), Document.objects.create(title="Min")
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
    entry = an_entry(
        Everything(pk=1),
        {
            "owner": [report.pk, minutes.pk],
            "twin": [red.pk, 999],
            "status": [Status.DRAFT, Status.LIVE],
        },
    )
    tags = an_entry(report, {"tags": {"added": [red.pk, blue.pk], "removed": [404]}})
    diff_rows(entry)  # warm the content-type cache

    with django_assert_num_queries(2):  # Document, Tag: not one per row or per key
        rows = {row.field: row for row in diff_rows(entry, link=lambda model, key: f"/{key}/")}
    with django_assert_num_queries(1):
        [m2m] = diff_rows(tags)

    owner, twin = rows["owner"], rows["twin"]
    assert [(r.key, r.label, r.url) for r in owner.old.related] == [
        (str(report.pk), "Report", f"/{report.pk}/")
    ]
    assert owner.new.related[0].label == "Min"
    assert twin.old.related[0].label == "red"
    assert (twin.new.related[0].label, twin.new.related[0].url) == (None, None)  # not found
    assert [r.label for r in m2m.new.related] == ["red", "blue"]
    assert [(r.key, r.label) for r in m2m.old.related] == [("404", None)]


def test_titles_say_what_happened_and_who_did_it():
    document = Document(pk=53)

    assert title(an_entry(document, {}, "update", "admin")) == "Document #53 changed by admin"
    assert title(an_entry(document, {}, "create")) == "Document #53 created"
    assert title(an_entry(document, {}, "delete", "cron")) == "Document #53 deleted by cron"


def test_the_model_offers_the_same_reading():
    entry = an_entry(Everything(pk=3), {"status": [Status.DRAFT, Status.LIVE]}, "update", "ann")

    assert entry.summary == "Everything #3 changed by ann"
    assert [row.new.choice for row in entry.get_diff_display()] == ["Live"]
