"""Model shapes beyond plain fields: each entry is compared with what the database held
before and after the change, read back with ``.values()``."""

import datetime

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models.functions import Upper
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext, isolate_apps

from auditq import audited, registry
from auditq.admin import trail_url
from auditq.checks import check_audited_fields
from auditq.delivery import recording
from auditq.models import AuditEntry, Outbox
from tests.helpers import only_entry, trail
from tests.shapesapp.models import (
    Blob,
    Book,
    Folder,
    Label,
    Note,
    Outline,
    Place,
    Reminder,
    Restaurant,
    Seat,
    Shop,
    Sum,
    Tag,
    Writer,
)

pytestmark = pytest.mark.django_db(transaction=True)


def entries(model, pk) -> list[AuditEntry]:
    """``model``'s entries for the key ``pk`` (also once the object is deleted), oldest first."""
    return list(AuditEntry.objects.for_model(model).filter(object_pk=str(pk)))


def history(model, pk) -> list[tuple[str, dict]]:
    """``(action, changes)`` of each of those entries."""
    return [(e.action, e.changes) for e in entries(model, pk)]


def statements(queries, verb: str, table: str) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(verb) and table in q["sql"]
    ]


# --------------------------------------------------------------------------- generated columns


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_generated_column_is_recorded_as_the_database_computed_it(in_transaction):
    row = Sum.objects.create(a=1, b=2)
    row = Sum.objects.get(pk=row.pk)
    before = Sum.objects.values("a", "total").get(pk=row.pk)
    row.a = 10
    with transaction.atomic() if in_transaction else CaptureQueriesContext(connection):
        row.save()
    after = Sum.objects.values("a", "total").get(pk=row.pk)

    assert trail(row)[-1].changes == {
        "a": [before["a"], after["a"]],
        "total": [before["total"], after["total"]],
    }
    assert row.total == after["total"]  # no stale value left on the instance


def test_a_generated_column_changes_with_update_fields_and_its_delete_is_not_stale():
    row = Sum.objects.create(a=1, b=2)
    assert only_entry(row, "create").changes["total"] == [
        None,
        Sum.objects.values_list("total", flat=True).get(pk=row.pk),
    ]
    row.b = 5
    row.save(update_fields=["b"])
    saved = Sum.objects.values_list("total", flat=True).get(pk=row.pk)
    pk = row.pk
    row.delete()

    [_, update, delete] = entries(Sum, pk)
    assert update.changes == {"b": [2, 5], "total": [3, saved]}
    assert delete.changes["total"] == [saved, None]


# --------------------------------------------------------------------------- composite keys


def test_a_composite_key_has_one_text_form_for_capture_for_object_and_the_admin_link():
    seat = Seat.objects.create(row=1, number=-54, holder="Ada")
    seat = Seat.objects.get(pk=(1, -54))
    seat.holder = "Bob"
    seat.save()
    after = Seat.objects.values("holder").get(row=1, number=-54)

    [create, update] = trail(seat)
    assert create.object_pk == update.object_pk == "[1, -54]"
    assert update.changes == {"holder": ["Ada", after["holder"]]}

    admin = User.objects.create_superuser("root", password="x")
    request = RequestFactory().get("/")
    request.user = admin
    assert "object_pk=%5B1%2C+-54%5D" in trail_url(request, seat)

    seat.delete()
    assert not Seat.objects.filter(row=1, number=-54).exists()
    delete = AuditEntry.objects.for_model(Seat).get(action="delete")
    assert (delete.object_pk, delete.changes["holder"]) == ("[1, -54]", ["Bob", None])


def test_bulk_writes_of_a_composite_key_model_are_recorded_under_its_key():
    Seat.objects.bulk_create([Seat(row=2, number=n, holder="Ada") for n in (1, 2)])
    Seat.objects.filter(number=1).update(holder="Bob")
    seat = Seat.objects.get(pk=(2, 2))
    seat.holder = "Cy"
    Seat.objects.bulk_update([seat], ["holder"])
    Seat.objects.filter(number=1).update(holder=Upper("holder"))  # computed by the database

    entries = AuditEntry.objects.for_model(Seat).order_by("id")
    assert [(e.object_pk, e.action, e.changes["holder"]) for e in entries] == [
        ("[2, 1]", "create", [None, "Ada"]),
        ("[2, 2]", "create", [None, "Ada"]),
        ("[2, 1]", "update", ["Ada", "Bob"]),
        ("[2, 2]", "update", ["Ada", "Cy"]),
        ("[2, 1]", "update", ["Bob", "BOB"]),
    ]


# --------------------------------------------------------------------------- object_repr


def test_a_str_that_follows_an_unloaded_relation_costs_no_query_the_worker_takes_it(
    undelivered, monkeypatch
):
    writer = Writer.objects.create(name="Ann")
    book = Book.objects.create(title="Emma", writer=writer)
    book = Book.objects.get(pk=book.pk)  # book.writer is not loaded
    book.title = "Persuasion"
    sent = []  # what reaches the database (a refused query is logged, never sent)
    execute = CursorWrapper._execute
    monkeypatch.setattr(
        CursorWrapper, "_execute", lambda self, sql, *a: sent.append(sql) or execute(self, sql, *a)
    )

    book.save()

    monkeypatch.undo()
    assert [sql for sql in sent if "shapesapp_writer" in sql] == []
    assert [sql.split()[0] for sql in sent if "shapesapp_book" in sql] == ["UPDATE"]
    assert Outbox.objects.last().events[0].repr is None
    recording.record_waiting()
    assert trail(book)[-1].object_repr == "Persuasion by Ann"


def test_a_str_over_a_loaded_relation_is_taken_on_the_request_path(undelivered):
    writer = Writer.objects.create(name="Ann")
    book = Book.objects.create(title="Emma", writer=writer)
    book = Book.objects.select_related("writer").get(pk=book.pk)
    book.title = "Persuasion"
    book.save()

    assert Outbox.objects.last().events[0].repr == "Persuasion by Ann"


def test_a_deleted_object_whose_str_needs_a_query_is_named_by_its_key():
    book = Book.objects.create(title="Emma", writer=Writer.objects.create(name="Ann"))
    pk = book.pk
    Book.objects.get(pk=pk).delete()

    assert entries(Book, pk)[-1].object_repr == str(pk)


# --------------------------------------------------------------------------- proxies


def test_changes_made_through_a_proxy_are_on_the_concrete_models_trail():
    reminder = Reminder.objects.create(text="call")
    reminder = Reminder.objects.get(pk=reminder.pk)
    reminder.text = "call back"
    reminder.save()
    pk = reminder.pk
    row = Note.objects.values("id", "text").get(pk=pk)
    assert trail(reminder) == trail(Note.objects.get(pk=pk))
    reminder.delete()

    assert history(Note, pk) == [
        ("create", {"id": [None, pk], "text": [None, "call"]}),
        ("update", {"text": ["call", row["text"]]}),
        ("delete", {"id": [pk, None], "text": [row["text"], None]}),
    ]
    assert entries(Note, pk)[0].object_repr == "reminder: call"


def test_audited_on_a_proxy_is_a_system_check_error_that_names_the_concrete_model():
    saved = registry.audited_models()
    try:
        with isolate_apps("tests.shapesapp"):

            class Memo(Note):
                class Meta:
                    proxy = True
                    app_label = "shapesapp"

            audited(Memo)
            [error] = check_audited_fields()
    finally:
        registry._audited.clear()
        registry._audited.update(saved)
        registry.clear_caches()

    assert (error.id, error.obj) == ("auditq.E001", Memo)
    assert "proxy model shapesapp.Memo" in error.msg
    assert "Decorate Note instead" in error.hint


# ---------------------------------------------------------------------- multi-table inheritance


def test_an_unaudited_childs_changes_are_on_its_parents_trail_with_the_parents_fields():
    restaurant = Restaurant.objects.create(name="Chez Ann", serves="soup")
    restaurant = Restaurant.objects.get(pk=restaurant.pk)
    restaurant.name = "Ann's"
    restaurant.serves = "bread"
    restaurant.save()
    row = Place.objects.values("id", "name").get(pk=restaurant.pk)
    restaurant.serves = "soup"
    restaurant.save()  # only the child's own field: nothing for the parent
    pk = restaurant.pk
    restaurant.delete()

    assert history(Place, pk) == [
        ("create", {"id": [None, pk], "name": [None, "Chez Ann"]}),
        ("update", {"name": ["Chez Ann", row["name"]]}),
        ("delete", {"id": [pk, None], "name": [row["name"], None]}),
    ]
    assert not AuditEntry.objects.for_model(Restaurant).exists()


def test_an_audited_childs_changes_are_on_both_trails():
    shop = Shop.objects.create(name="Corner", kind="books")
    shop.kind = "music"
    shop.save()
    shop.name = "Round the corner"
    shop.save()
    row = Shop.objects.values("id", "place_ptr", "name", "kind").get(pk=shop.pk)
    pk = shop.pk
    shop.delete()

    assert history(Place, pk) == [
        ("create", {"id": [None, pk], "name": [None, "Corner"]}),
        ("update", {"name": ["Corner", row["name"]]}),
        ("delete", {"id": [pk, None], "name": [row["name"], None]}),
    ]
    assert history(Shop, pk) == [
        (
            "create",
            {
                "id": [None, pk],
                "name": [None, "Corner"],
                "place_ptr": [None, pk],
                "kind": [None, "books"],
            },
        ),
        ("update", {"kind": ["books", row["kind"]]}),
        ("update", {"name": ["Corner", row["name"]]}),
        (
            "delete",
            {
                "id": [pk, None],
                "name": [row["name"], None],
                "place_ptr": [pk, None],
                "kind": [row["kind"], None],
            },
        ),
    ]


def test_a_parents_many_to_many_used_through_an_audited_child_is_on_both_trails(undelivered):
    shop = Shop.objects.create(name="Corner")
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
    shop.tags.add(red, blue)
    shop.tags.remove(red)
    kept = set(Shop.tags.through.objects.filter(place=shop).values_list("tag_id", flat=True))

    with CaptureQueriesContext(connection) as queries:
        shop.tags.clear()

    assert len(statements(queries, "SELECT", "shapesapp_place_tags")) == 1
    recording.record_waiting()
    for model in (Place, Shop):
        assert [e.changes["tags"] for e in entries(model, shop.pk) if "tags" in e.changes] == [
            {"added": sorted([red.pk, blue.pk]), "removed": []},
            {"added": [], "removed": [red.pk]},
            {"added": [], "removed": sorted(kept)},
        ]


# --------------------------------------------------------------------------- filtered managers


def test_a_targets_filtering_default_manager_records_only_what_the_through_table_lost():
    folder = Folder.objects.create(name="inbox")
    shown = Label.objects.create(name="shown")
    hidden = Label.objects.create(name="hidden", is_secret=True)
    through = Folder.labels.through.objects.filter(folder=folder)
    folder.labels.add(shown, hidden)

    folder.labels.remove(shown, hidden)
    assert set(through.values_list("label_id", flat=True)) == {hidden.pk}
    folder.labels.add(shown)
    folder.labels.clear()
    assert set(through.values_list("label_id", flat=True)) == {hidden.pk}

    assert [e.changes["labels"] for e in trail(folder)[1:]] == [
        {"added": sorted([shown.pk, hidden.pk]), "removed": []},
        {"added": [], "removed": [shown.pk]},
        {"added": [shown.pk], "removed": []},
        {"added": [], "removed": [shown.pk]},
    ]


def test_reverse_remove_through_a_filtering_manager_records_what_went():
    folder = Folder.objects.create(name="inbox")
    label = Label.objects.create(name="shown")
    label.folder_set.add(folder)
    label.folder_set.remove(folder)

    assert not Folder.labels.through.objects.exists()
    assert trail(folder)[-1].changes == {"labels": {"added": [], "removed": [label.pk]}}


def test_a_default_secret_mask_is_lifted_with_unmask():
    label = Label.objects.create(name="hidden", is_secret=True)

    assert only_entry(label, "create").changes["is_secret"] == [None, True]


# --------------------------------------------------------------------------- JSON columns


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"flag": 1, "list": [0]}, {"flag": True, "list": [False]}),
        ({"n": 1}, {"n": 1.0}),
        ([1, 2], [1.0, 2]),
    ],
)
def test_json_values_equal_in_python_but_not_in_the_column_are_a_change(old, new):
    blob = Blob.objects.create(data=old)
    blob = Blob.objects.get(pk=blob.pk)
    blob.data = new
    blob.save()
    after = Blob.objects.values_list("data", flat=True).get(pk=blob.pk)

    assert after == new
    assert trail(blob)[-1].changes == {"data": [old, after]}


def test_a_row_loaded_with_its_parent_keeps_each_ones_json():
    root = Outline.objects.create(data={"title": "root", "tags": []})
    leaf = Outline.objects.create(parent=root, data={"title": "leaf", "tags": []})

    leaf = Outline.objects.select_related("parent").get(pk=leaf.pk)  # data twice in a row
    leaf.data["tags"].append("a")
    leaf.parent.data["tags"].append("b")
    leaf.save()
    leaf.parent.save()

    assert trail(leaf)[-1].changes == {
        "data": [{"title": "leaf", "tags": []}, {"title": "leaf", "tags": ["a"]}]
    }
    assert trail(root)[-1].changes == {
        "data": [{"title": "root", "tags": []}, {"title": "root", "tags": ["b"]}]
    }


def test_an_unchanged_json_value_records_nothing():
    blob = Blob.objects.create(data={"flag": True, "n": [1.5]})
    blob = Blob.objects.get(pk=blob.pk)
    blob.data = {"n": [1.5], "flag": True}
    blob.save()

    assert [e.action for e in trail(blob)] == ["create"]


def test_a_json_field_with_its_own_encoder_is_recorded_as_that_encoder_writes_it():
    at = datetime.datetime(2024, 5, 6, 7, 8, 9, 890123, tzinfo=datetime.UTC)
    blob = Blob.objects.create(stamped={"at": at})
    stored = Blob.objects.values_list("stamped", flat=True).get(pk=blob.pk)
    blob = Blob.objects.get(pk=blob.pk)
    blob.stamped = {"at": at + datetime.timedelta(seconds=1)}
    blob.save()
    after = Blob.objects.values_list("stamped", flat=True).get(pk=blob.pk)
    blob.stamped = {"at": at + datetime.timedelta(seconds=1)}
    blob.save()  # the same value again: nothing to record

    [create, update] = trail(blob)
    assert stored == {"at": "2024-05-06T07:08:09.890Z"}
    assert create.changes["stamped"] == [None, stored]
    assert update.changes == {"stamped": [stored, after]}
