"""Time travel: ``AuditEntry.objects.as_of()`` and ``field_history()`` read an object's
values back from its trail, as Python values, and never guess."""

import datetime
import decimal
import uuid

import pytest
from django.utils import timezone

from auditq import HistoryIncomplete, RevertConflict
from auditq.models import AuditEntry
from tests.testapp.models import Account, Document, Everything, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def moment() -> datetime.datetime:
    """Now, and a microsecond later: the next change happens after it."""
    now = timezone.now()
    while timezone.now() == now:
        pass
    return now


def test_as_of_gives_the_values_at_each_moment_and_none_before_and_after():
    before = moment()
    document = Document.objects.create(title="first", status="draft")
    created = moment()
    document.title = "second"
    document.save()
    edited = moment()
    pk = document.pk
    document.delete()

    assert AuditEntry.objects.as_of((Document, pk), before) is None
    assert AuditEntry.objects.as_of((Document, pk), created)["title"] == "first"
    at_edit = AuditEntry.objects.as_of((Document, pk), edited)
    assert (at_edit["title"], at_edit["status"]) == ("second", "draft")
    assert AuditEntry.objects.as_of((Document, pk), timezone.now()) is None


def test_values_come_back_as_python_values():
    day = datetime.date(2024, 2, 29)
    everything = Everything.objects.create(
        amount=decimal.Decimal("12.50"),
        day=day,
        moment=datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC),
        span=datetime.timedelta(days=1, hours=2),
        doc={"a": [1, 2]},
        blob=b"\x00\x01",
    )

    values = AuditEntry.objects.as_of(everything, timezone.now())

    assert values["amount"] == decimal.Decimal("12.50")
    assert values["day"] == day
    assert values["moment"] == datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC)
    assert values["span"] == datetime.timedelta(days=1, hours=2)
    assert values["doc"] == {"a": [1, 2]}
    assert bytes(values["blob"]) == b"\x00\x01"
    assert isinstance(values["uid"], uuid.UUID) and values["uid"] == everything.uid


def test_many_to_many_is_the_set_of_keys_at_that_moment():
    one, two = Tag.objects.create(name="one"), Tag.objects.create(name="two")
    document = Document.objects.create(title="tagged")
    document.tags.add(one, two)
    both = moment()
    document.tags.remove(one)

    assert AuditEntry.objects.as_of(document, both)["tags"] == {one.pk, two.pk}
    assert AuditEntry.objects.as_of(document, timezone.now())["tags"] == {two.pk}


def test_masked_fields_are_left_out_not_shown_as_stars():
    account = Account.objects.create(name="ada", pin="1234")

    values = AuditEntry.objects.as_of(account, timezone.now())

    assert values["name"] == "ada"
    assert "pin" not in values and "password" not in values
    with pytest.raises(ValueError, match=r"testapp.Account.pin is masked"):
        AuditEntry.objects.field_history(account, "pin")


def test_a_trail_that_does_not_reach_back_to_the_creation_is_an_error():
    document = Document.objects.create(title="old")
    document.title = "new"
    document.save()
    AuditEntry.objects.for_object(document).filter(action="create").delete()  # pruned

    with pytest.raises(HistoryIncomplete, match="does not reach back to its creation"):
        AuditEntry.objects.as_of(document, timezone.now())


def test_field_history_lists_each_change_oldest_first(django_user_model):
    ada = django_user_model.objects.create(username="ada")
    document = Document.objects.create(title="a", status="draft")
    document.status = "live"
    document.save()
    document.author = ada
    document.save()
    document.status = "draft"
    document.save()

    history = AuditEntry.objects.field_history(document, "status")

    assert [(h.old, h.new) for h in history] == [
        (None, "draft"),
        ("draft", "live"),
        ("live", "draft"),
    ]
    assert [h.new for h in AuditEntry.objects.field_history(document, "author")] == [None, ada.pk]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("not an object", timezone.now()), "Give a model instance or"),
        ((None, "yesterday"), "when= takes a datetime"),
        ((None, datetime.datetime(2024, 1, 1)), "aware datetime"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(arguments, message):
    obj, when = arguments
    obj = Document.objects.create(title="x") if obj is None else obj
    with pytest.raises(ValueError, match=message):
        AuditEntry.objects.as_of(obj, when)


def test_an_unknown_field_is_refused_by_name():
    document = Document.objects.create(title="x")
    with pytest.raises(ValueError, match=r"testapp.Document has no field 'nope'"):
        AuditEntry.objects.field_history(document, "nope")


# --------------------------------------------------------------------------- revert


def only(obj, action):
    return AuditEntry.objects.for_object(obj).filter(action=action).latest("id")


def test_revert_puts_the_old_values_back_as_a_new_audited_change():
    document = Document.objects.create(title="right", status="draft")
    document.title = "wrong"
    document.status = "live"
    document.save()
    mistake = only(document, "update")

    reverted = mistake.revert()

    document.refresh_from_db()
    assert (
        (document.title, document.status)
        == ("right", "draft")
        == (
            reverted.title,
            reverted.status,
        )
    )
    undo = AuditEntry.objects.for_object(document).latest("id")
    assert undo.context["reverted"] == mistake.pk
    assert undo.changes == {"title": ["wrong", "right"], "status": ["live", "draft"]}


def test_revert_refuses_when_a_field_changed_since_and_names_it():
    document = Document.objects.create(title="a")
    document.title = "b"
    document.save()
    mistake = only(document, "update")
    document.title = "c"  # someone else's change since
    document.save()

    with pytest.raises(RevertConflict, match=r"\(title\)") as conflict:
        mistake.revert()

    assert conflict.value.fields == ["title"]
    document.refresh_from_db()
    assert document.title == "c"


def test_revert_of_a_masked_change_is_a_conflict_its_old_value_was_never_kept():
    account = Account.objects.create(name="ada", pin="1")
    account.pin = "2"
    account.save()

    with pytest.raises(RevertConflict, match=r"\(pin\)"):
        only(account, "update").revert()


def test_revert_of_many_to_many_changes_removes_the_added_and_adds_the_removed():
    one, two = Tag.objects.create(name="one"), Tag.objects.create(name="two")
    document = Document.objects.create(title="tagged")
    document.tags.add(one)
    document.tags.add(two)

    AuditEntry.objects.for_object(document).filter(action="update").latest("id").revert()

    assert set(document.tags.values_list("pk", flat=True)) == {one.pk}


def test_revert_of_a_delete_restores_the_row():
    document = Document.objects.create(title="gone", status="live", data={"k": 1})
    pk = document.pk
    document.delete()
    deleted = AuditEntry.objects.for_model(Document).get(action="delete", object_pk=str(pk))

    restored = deleted.revert()

    assert restored.pk == pk
    again = Document.objects.get(pk=pk)
    assert (again.title, again.status, again.data) == ("gone", "live", {"k": 1})
    assert AuditEntry.objects.for_object(again).latest("id").context["reverted"] == deleted.pk


def test_revert_of_a_delete_whose_masked_values_were_never_kept_is_refused():
    account = Account.objects.create(name="ada", pin="1234")
    pk = account.pk
    account.delete()
    deleted = AuditEntry.objects.for_model(Account).get(action="delete", object_pk=str(pk))

    with pytest.raises(RevertConflict, match="never kept"):
        deleted.revert()
    assert not Account.objects.filter(pk=pk).exists()


def test_a_create_is_not_reverted():
    document = Document.objects.create(title="new")
    with pytest.raises(ValueError, match="is a create"):
        only(document, "create").revert()
