"""Capture: what a save, a delete or a many-to-many change records, and what it costs."""

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction
from django.db.models import JSONField
from django.db.models.fields.json import KeyTransform
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext

from auditq import audit_context, disable_auditing
from auditq.capture import json_text, snapshot
from auditq.models import AuditEntry, Outbox
from tests.helpers import trail
from tests.testapp.models import Account, Chosen, Document, Everything, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_records_every_field_with_old_none():
    document = Document.objects.create(title="Report", body="draft")

    [entry] = trail(document)
    assert entry.action == "create"
    assert entry.object_repr == "Report"
    assert entry.changes == {
        "id": [None, document.pk],
        "title": [None, "Report"],
        "body": [None, "draft"],
        "status": [None, "draft"],
        "author": [None, None],
        "data": [None, {}],
    }


def test_update_records_only_the_changed_fields():
    document = Document.objects.create(title="Report", body="draft")
    document = Document.objects.get(pk=document.pk)
    document.title = "Final report"
    document.save()

    assert trail(document)[-1].changes == {"title": ["Report", "Final report"]}


def test_a_save_that_changes_nothing_records_nothing_and_writes_no_row(undelivered):
    document = Document.objects.create(title="Report")
    assert Outbox.objects.count() == 1

    document.save()
    Document.objects.get(pk=document.pk).save()

    assert Outbox.objects.count() == 1


def test_saving_a_loaded_instance_issues_no_select(undelivered):
    document = Document.objects.create(title="Report")
    document = Document.objects.get(pk=document.pk)
    document.title = "Final"

    with CaptureQueriesContext(connection) as queries:
        document.save()

    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert "SELECT" not in statements
    assert any("auditq_outbox" in q["sql"] for q in queries.captured_queries)
    assert Outbox.objects.last().events[0].changes == {"title": ["Report", "Final"]}


def test_a_value_set_as_text_that_saves_as_the_loaded_one_is_no_change():
    thing = Everything.objects.create(amount="5.00", big=7, day="2026-12-06")
    thing = Everything.objects.get(pk=thing.pk)  # Decimal("5.00"), 7, date(2026, 12, 6)
    thing.amount, thing.big, thing.day = "5", "7", "2026-12-06"  # as a form or a script sets them
    thing.save()
    thing.amount = "5.5"
    thing.save()

    assert [e.changes for e in trail(thing)][1:] == [{"amount": ["5", "5.5"]}]


def test_successive_saves_diff_against_the_previous_save():
    document = Document.objects.create(title="one")
    document.title = "two"
    document.save()
    document.title = "three"
    document.save()

    assert [e.changes.get("title") for e in trail(document)] == [
        [None, "one"],
        ["one", "two"],
        ["two", "three"],
    ]


def test_update_fields_records_only_the_saved_fields_and_keeps_the_rest_pending():
    document = Document.objects.create(title="one", body="a")
    document.title = "two"
    document.body = "b"
    document.save(update_fields=["title"])
    document.save()

    assert [e.changes for e in trail(document)[1:]] == [
        {"title": ["one", "two"]},
        {"body": ["a", "b"]},
    ]


def test_a_foreign_key_is_recorded_under_its_name_as_the_raw_key(django_user_model):
    author = django_user_model.objects.create(username="ada")
    document = Document.objects.create(title="Report")
    document.author = author
    document.save()

    assert trail(document)[-1].changes == {"author": [None, author.pk]}


def test_in_place_changes_to_json_are_seen():
    document = Document.objects.create(title="Report", data={"tags": ["a"]})
    document.data["tags"].append("b")
    document.save()

    assert trail(document)[-1].changes == {"data": [{"tags": ["a"]}, {"tags": ["a", "b"]}]}


@pytest.mark.parametrize(
    ("data", "edit", "after"),
    [
        ({"tags": ["a"]}, lambda d: d["tags"].append("b"), {"tags": ["a", "b"]}),
        ([1, {"x": None}], lambda d: d[1].update(x=2), [1, {"x": 2}]),
        ({"big": 2**70}, lambda d: d.update(big=2**70 + 1), {"big": 2**70 + 1}),
    ],
)
def test_in_place_changes_to_json_of_a_loaded_row_are_seen(data, edit, after):
    created = Document.objects.create(title="Report", data=data)
    document = Document.objects.get(pk=created.pk)
    before = Document.objects.values_list("data", flat=True).get(pk=created.pk)

    edit(document.data)
    document.save()

    assert trail(document)[-1].changes == {"data": [before, after]}


def test_a_loaded_json_value_is_kept_as_the_text_the_database_sent(monkeypatch):
    created = Document.objects.create(title="Report", data={"tags": ["a"], "n": 2**70})

    def encoded_again(value):
        raise AssertionError(f"encoded at load: {value!r}")

    monkeypatch.setattr(snapshot, "_text", encoded_again)
    [document] = Document.objects.filter(pk=created.pk)
    document.data["tags"].append("b")
    document.save()

    assert trail(document)[-1].changes == {
        "data": [{"tags": ["a"], "n": 2**70}, {"tags": ["a", "b"], "n": 2**70}]
    }


def test_the_json_text_is_not_kept_beyond_the_row_it_was_loaded_with():
    Document.objects.create(title="Report", data={"big": "x" * 10_000})
    [document] = Document.objects.all()

    slot = json_text.slot_of(Document._meta.get_field("data"))
    assert slot[0] is json_text.EMPTY  # taken by the row: nothing else holds the value
    assert document.data == {"big": "x" * 10_000}


@pytest.mark.parametrize(
    ("value", "expression"),
    [
        ('{"a": [1, 2.5, null]}', "data"),
        ('"text"', "data"),
        ("123456789012345678901234567890", "data"),
        ("not JSON", "data"),
        (None, "data"),
        (5, KeyTransform("n", "data")),  # SQLite's number for a key
    ],
)
def test_the_json_converter_decodes_as_djangos_own(value, expression):
    field = Document._meta.get_field("data")
    if isinstance(expression, str):
        expression = Document.objects.all().query.resolve_ref(expression)

    assert "from_db_value" in field.__dict__  # auditq's, which keeps the text
    ours = field.from_db_value(value, expression, connection)
    assert ours == JSONField.from_db_value(field, value, expression, connection)
    assert type(ours) is type(JSONField.from_db_value(field, value, expression, connection))


def test_rows_loaded_in_two_threads_keep_their_own_json():
    Document.objects.bulk_create(
        [Document(title=str(n), data={"n": n, "tags": [n]}) for n in range(200)]
    )

    def load():
        try:
            for _ in range(15):
                for document in Document.objects.all():
                    n = int(document.title)
                    assert snapshot.loaded_values(document)["data"] == {"n": n, "tags": [n]}
        finally:
            connection.close()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads swap often: between a converter and from_db()
    try:
        with ThreadPoolExecutor(2) as pool:
            for loaded in [pool.submit(load) for _ in range(2)]:
                loaded.result()
    finally:
        sys.setswitchinterval(interval)


def test_loading_rows_builds_no_snapshot_until_a_save_needs_one():
    Document.objects.create(title="Report", data={"n": 1})
    [document] = Document.objects.all()

    assert snapshot.LOADED not in document.__dict__  # one row kept, nothing more
    document.title = "Report, v2"
    document.save()

    assert trail(document)[-1].changes == {"title": ["Report", "Report, v2"]}
    assert document.__dict__[snapshot.LOADED]["title"] == "Report, v2"


def test_a_field_deferred_at_load_is_read_once_before_the_save():
    document = Document.objects.create(title="Report", body="old body")
    document = Document.objects.only("title").get(pk=document.pk)
    document.body = "new body"

    with CaptureQueriesContext(connection) as queries:
        document.save()

    selects = [q for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    selects = [q for q in selects if "auditq_" not in q["sql"]]  # the eager worker's reads
    assert len(selects) == 1
    assert trail(document)[-1].changes == {"body": ["old body", "new body"]}


def test_refresh_from_db_takes_a_new_snapshot():
    document = Document.objects.create(title="one")
    Document.objects.filter(pk=document.pk).update(title="changed elsewhere")
    document.refresh_from_db()
    document.status = "live"
    document.save()

    assert trail(document)[-1].changes == {"status": ["draft", "live"]}


def test_delete_records_the_last_values_with_new_none():
    document = Document.objects.create(title="Report")
    pk = document.pk
    document.delete()

    entry = AuditEntry.objects.for_model(Document).filter(object_pk=str(pk)).last()
    assert entry.action == "delete"
    assert entry.object_repr == "Report"
    assert entry.changes["title"] == ["Report", None]
    assert entry.changes["id"] == [pk, None]


def test_queryset_delete_records_each_row():
    Document.objects.create(title="a")
    Document.objects.create(title="b")
    Document.objects.all().delete()

    deleted = AuditEntry.objects.filter(action="delete")
    assert sorted(deleted.values_list("object_repr", flat=True)) == ["a", "b"]


def test_fields_and_exclude_choose_what_is_recorded():
    chosen = Chosen.objects.create(name="x", ignored=1)
    chosen.ignored = 2
    chosen.save()
    account = Account.objects.create(name="ada")
    account.save()

    assert trail(chosen)[0].changes == {"name": [None, "x"]}
    assert len(trail(chosen)) == 1
    assert "updated_at" not in trail(account)[0].changes
    assert len(trail(account)) == 1


def test_password_token_and_secret_fields_are_masked_by_default(settings):
    settings.AUDITQ = {**settings.AUDITQ, "MASKED_FIELDS": ["name"]}
    account = Account.objects.create(
        name="ada", password="pw", api_token="tok", client_secret="sec", pin="1"
    )

    changes = trail(account)[0].changes
    for field in ("name", "password", "api_token", "client_secret", "pin"):
        assert changes[field] == [None, "***"], field


class TestManyToMany:
    def test_add_and_remove_are_recorded_on_the_owner(self):
        document = Document.objects.create(title="Report")
        red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
        document.tags.add(red, blue)
        document.tags.remove(red)

        assert [e.changes for e in trail(document)[1:]] == [
            {"tags": {"added": sorted([red.pk, blue.pk]), "removed": []}},
            {"tags": {"added": [], "removed": [red.pk]}},
        ]

    def test_clear_lists_every_removed_key(self):
        document = Document.objects.create(title="Report")
        tags = [Tag.objects.create(name=n) for n in "abc"]
        document.tags.set(tags)
        document.tags.clear()

        assert trail(document)[-1].changes == {
            "tags": {"added": [], "removed": sorted(t.pk for t in tags)}
        }

    def test_changes_from_the_other_side_are_recorded_on_each_owner(self):
        first, second = Document.objects.create(title="1"), Document.objects.create(title="2")
        tag = Tag.objects.create(name="red")
        tag.documents.add(first, second)
        tag.documents.clear()

        for document in (first, second):
            assert [e.changes for e in trail(document)[1:]] == [
                {"tags": {"added": [tag.pk], "removed": []}},
                {"tags": {"added": [], "removed": [tag.pk]}},
            ]
            assert trail(document)[-1].object_repr == document.title

    def test_keys_are_listed_in_numeric_order(self):
        document = Document.objects.create(title="Report")
        tags = [Tag.objects.create(pk=pk, name=str(pk)) for pk in (100, 9, 10)]
        document.tags.add(*tags)

        assert trail(document)[-1].changes == {"tags": {"added": [9, 10, 100], "removed": []}}

    def test_adding_an_existing_link_records_nothing(self):
        document = Document.objects.create(title="Report")
        tag = Tag.objects.create(name="red")
        document.tags.add(tag)
        document.tags.add(tag)

        assert len(trail(document)) == 2


class TestTransactions:
    def test_a_rolled_back_transaction_records_nothing(self):
        with pytest.raises(ValueError), transaction.atomic():
            Document.objects.create(title="ghost")
            raise ValueError

        assert not AuditEntry.objects.exists()
        assert not Outbox.objects.exists()

    def test_a_rolled_back_savepoint_drops_only_its_changes(self, undelivered):
        with transaction.atomic():
            Document.objects.create(title="kept")
            with pytest.raises(ValueError), transaction.atomic():
                Document.objects.create(title="dropped")
                with transaction.atomic():
                    Document.objects.create(title="dropped too")
                raise ValueError
            with transaction.atomic():
                Document.objects.create(title="kept too")

        [row] = Outbox.objects.all()
        assert [e.repr for e in row.events] == ["kept", "kept too"]

    def test_one_row_per_transaction(self, undelivered, settings):
        settings.AUDITQ = {**settings.AUDITQ, "SQUASH": False}  # every save, as it came
        with transaction.atomic():
            for number in range(10):
                Document.objects.create(title=str(number))
            Document.objects.all().delete()

        [row] = Outbox.objects.all()
        assert [e.action for e in row.events] == ["create"] * 10 + ["delete"] * 10

    def test_a_plain_save_commits_its_row_with_it(self, undelivered):
        with CaptureQueriesContext(connection) as queries:
            document = Document.objects.create(title="autocommit")

        sql = [q["sql"] for q in queries.captured_queries]
        if connection.vendor == "postgresql":
            # One statement, one round trip: the INSERT writes its own outbox row.
            [insert] = sql
            assert insert.startswith('INSERT INTO "testapp_document"')
            assert "auditq_outbox_put(" in insert
        else:
            insert = next(i for i, s in enumerate(sql) if "testapp_document" in s)
            outbox = next(i for i, s in enumerate(sql) if "auditq_outbox" in s)
            commits = [i for i, s in enumerate(sql) if s.upper().startswith("COMMIT")]
            assert insert < outbox < commits[0]
            assert len(commits) == 1
        [event] = Outbox.objects.get().events
        assert (event.pk, event.repr) == (document.pk, "autocommit")
        assert event.changes["id"] == [None, document.pk]

    def test_a_save_made_inside_another_saves_post_save_is_recorded_too(self):
        def publish(sender, instance, created, **kwargs):
            if created:  # a receiver that saves the instance it was sent
                instance.status = "published"
                instance.save(update_fields=["status"])

        post_save.connect(publish, sender=Document, dispatch_uid="test-publish")
        try:
            document = Document.objects.create(title="nested")
        finally:
            post_save.disconnect(dispatch_uid="test-publish", sender=Document)
        document.title = "after"
        with transaction.atomic():
            document.save()

        recorded = [
            (e.action, e.changes.get("status"), e.changes.get("title")) for e in trail(document)
        ]
        if connection.vendor == "postgresql":
            # A lone INSERT commits by itself, before post_save: the receiver's save is a
            # transaction of its own, as it is without auditq.
            assert recorded == [
                ("create", [None, "draft"], [None, "nested"]),
                ("update", ["draft", "published"], None),
                ("update", None, ["nested", "after"]),
            ]
        else:
            # The save and its receiver's save commit together: one create (squashed).
            assert recorded == [
                ("create", [None, "published"], [None, "nested"]),
                ("update", None, ["nested", "after"]),
            ]

    def test_a_failed_save_leaves_the_connection_usable(self):
        document = Document.objects.create(title="ok")
        with pytest.raises(Exception):  # noqa: B017 - the database's own IntegrityError
            Document.objects.create(pk=document.pk, title="duplicate key")
        Document.objects.create(title="after")

        assert AuditEntry.objects.count() == 2


class TestContext:
    def test_actor_and_extra_context_are_recorded(self, django_user_model):
        user = django_user_model.objects.create(username="ada")
        with audit_context(actor=user, reason="import", batch=7):
            document = Document.objects.create(title="Report")

        [entry] = trail(document)
        assert entry.actor_id == user.pk
        assert entry.actor_repr == "ada"
        assert entry.context == {"reason": "import", "batch": 7}

    def test_nested_blocks_override_and_extend(self, django_user_model):
        ada = django_user_model.objects.create(username="ada")
        bob = django_user_model.objects.create(username="bob")
        with audit_context(actor=ada, reason="outer", source="csv"):
            with audit_context(actor=bob, reason="inner"):
                inner = Document.objects.create(title="inner")
            outer = Document.objects.create(title="outer")

        assert (trail(inner)[0].actor_repr, trail(inner)[0].context) == (
            "bob",
            {"reason": "inner", "source": "csv"},
        )
        assert (trail(outer)[0].actor_repr, trail(outer)[0].context) == (
            "ada",
            {"reason": "outer", "source": "csv"},
        )

    def test_the_actor_survives_the_users_deletion(self, django_user_model):
        user = django_user_model.objects.create(username="ada")
        with audit_context(actor=user):
            document = Document.objects.create(title="Report")
        pk = user.pk
        user.delete()

        [entry] = trail(document)
        assert (entry.actor_id, entry.actor_repr) == (pk, "ada")

    def test_disable_auditing_records_nothing(self):
        with disable_auditing():
            document = Document.objects.create(title="quiet")
            document.title = "still quiet"
            document.save()
        document.title = "loud"
        document.save()

        assert [e.changes for e in trail(document)] == [{"title": ["still quiet", "loud"]}]
