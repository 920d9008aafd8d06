"""``auditq.stream.encoding.encode``: every value as ``AuditEntry.changes`` stores it (README).

The first part calls ``encode`` directly; the second saves ``Everything`` rows and reads
the entries the (eager) worker wrote, so the values are checked after the JSON round trip.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime
import decimal
import enum
import fractions
import ipaddress
import json
import math
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.db.models.fields.files import FieldFile, ImageFieldFile
from django.utils.duration import duration_iso_string
from django.utils.translation import gettext_lazy

from auditq.stream.encoding import REPR_LIMIT, encode, json_bytes
from tests.helpers import only_entry, trail
from tests.testapp.models import Document, Everything, Status, Tag

UTC = datetime.UTC
PARIS = ZoneInfo("Europe/Paris")


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Color(str, enum.Enum):  # noqa: UP042 - the point of the test
    """The pre-3.11 way to write a string enum, still common as ``choices``."""

    RED = "red"


class Shade(enum.StrEnum):
    DARK = "dark"


class Priority(enum.Enum):
    """A plain Enum: not a str or int subclass, but its value has a JSON form."""

    URGENT = "urgent"
    EPOCH = datetime.date(1970, 1, 1)


class Opaque:
    """An object with no JSON form and a stable repr."""

    def __repr__(self) -> str:
        return "<Opaque thing>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


class BadEverything:
    """Every dunder a careless encoder might call raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __iter__(self):
        raise RuntimeError("iter")

    def __getattr__(self, name: str):
        raise RuntimeError(f"getattr {name}")


def flagged(text: str) -> dict:
    return {"repr": text, "unencodable": True}


def strict_json(value: object) -> object:
    """Return ``value`` after a strict JSON round trip (no NaN, no custom types)."""
    return json.loads(json.dumps(value, allow_nan=False))


# --------------------------------------------------------------------------- plain values


@pytest.mark.parametrize(
    "value",
    ["", "text", "ünïcödé ✓", 0, -7, 2**70, True, False, None],
    ids=repr,
)
def test_plain_json_values_are_kept_as_they_are(value):
    encoded = encode(value)
    assert encoded == value
    assert type(encoded) is type(value)


@pytest.mark.parametrize("value", [0.0, -0.0, 0.25, -1.5e300, 5e-324])
def test_finite_floats_stay_floats(value):
    encoded = encode(value)
    assert type(encoded) is float
    assert encoded == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")],
    ids=["nan", "inf", "-inf"],
)
def test_nan_and_infinities_become_strings_so_the_result_is_strict_json(value, expected):
    assert encode(value) == expected
    assert strict_json(encode([value, {"x": value}])) == [expected, {"x": expected}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("12.50"), "12.50"),
        (decimal.Decimal("0"), "0"),
        (decimal.Decimal("-0.001"), "-0.001"),
        (decimal.Decimal("123456789012345678901234567890.12"), "123456789012345678901234567890.12"),
        (decimal.Decimal("NaN"), "NaN"),
    ],
)
def test_decimal_becomes_its_exact_string(value, expected):
    assert encode(value) == expected


def test_uuid_becomes_its_canonical_string():
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert encode(value) == "12345678-1234-5678-1234-567812345678"


# --------------------------------------------------------------------------- dates and times


def test_aware_datetime_is_iso_8601_with_its_offset():
    assert encode(datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)) == (
        "2024-05-06T07:08:09.123456+00:00"
    )
    assert encode(datetime.datetime(2024, 5, 6, 7, 8, tzinfo=PARIS)) == (
        "2024-05-06T07:08:00+02:00"
    )


def test_naive_datetime_is_iso_8601_without_offset():
    assert encode(datetime.datetime(2024, 5, 6, 7, 8, 9)) == "2024-05-06T07:08:09"


def test_date_and_time_are_iso_8601():
    assert encode(datetime.date(2024, 2, 29)) == "2024-02-29"
    assert encode(datetime.time(7, 8, 9, 500)) == "07:08:09.000500"
    assert encode(datetime.time(23, 59)) == "23:59:00"
    assert encode(datetime.time(7, 8, tzinfo=UTC)) == "07:08:00+00:00"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime.timedelta(0), "P0DT00H00M00S"),
        (
            datetime.timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5),
            "P1DT02H03M04.000005S",
        ),
        (datetime.timedelta(seconds=-90), "-P0DT00H01M30S"),
    ],
)
def test_timedelta_is_an_iso_8601_duration(value, expected):
    assert encode(value) == expected == duration_iso_string(value)


# --------------------------------------------------------------------------- binary data


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\x01binary\xff", bytearray(b"\x00\xfe"), memoryview(b"view\x00")],
    ids=["empty", "bytes", "bytearray", "memoryview"],
)
def test_binary_data_is_base64(value):
    encoded = encode(value)
    assert encoded == base64.b64encode(bytes(value)).decode("ascii")
    assert base64.b64decode(encoded) == bytes(value)


# --------------------------------------------------------------------------- containers


def test_dicts_lists_and_tuples_are_encoded_recursively():
    value = {
        "amount": decimal.Decimal("1.10"),
        "when": [datetime.date(2024, 1, 2), (uuid.UUID(int=1), b"\x01")],
        "nested": {"deeper": {"nan": math.nan, "ok": [1, "two", None, True]}},
    }
    assert encode(value) == {
        "amount": "1.10",
        "when": ["2024-01-02", ["00000000-0000-0000-0000-000000000001", "AQ=="]],
        "nested": {"deeper": {"nan": "nan", "ok": [1, "two", None, True]}},
    }


def test_dict_keys_become_strings():
    key = uuid.UUID(int=2)
    assert encode({1: "a", None: "b", key: "c"}) == {
        "1": "a",
        "None": "b",
        "00000000-0000-0000-0000-000000000002": "c",
    }


def test_container_subclasses_are_encoded_like_their_base():
    point = collections.namedtuple("Point", "x y")
    assert encode(point(1, decimal.Decimal("2.5"))) == [1, "2.5"]
    assert encode(collections.OrderedDict(a=decimal.Decimal("1"))) == {"a": "1"}
    assert encode(collections.defaultdict(list, a=[uuid.UUID(int=3)])) == {
        "a": ["00000000-0000-0000-0000-000000000003"]
    }
    assert type(encode(collections.OrderedDict(a=1))) is dict


def test_encode_returns_new_containers():
    inner = [1, 2]
    value = {"inner": inner}
    encoded = encode(value)
    assert encoded == value
    assert encoded is not value
    assert encoded["inner"] is not inner


def test_sets_become_lists_in_sorted_order():
    assert encode({10, 9, 2, 100}) == [2, 9, 10, 100]
    assert encode(frozenset({"pear", "apple", "fig"})) == ["apple", "fig", "pear"]
    assert encode(set()) == []


def test_a_set_of_mixed_types_becomes_a_list_in_an_order_independent_of_insertion():
    first = encode({1, "a", None, decimal.Decimal("2.5")})
    second = encode({decimal.Decimal("2.5"), None, "a", 1})
    assert first == second
    assert sorted(first, key=repr) == sorted([1, "a", None, "2.5"], key=repr)


def test_a_set_of_values_needing_encoding_is_encoded_item_by_item():
    assert encode({uuid.UUID(int=5)}) == ["00000000-0000-0000-0000-000000000005"]
    assert encode({datetime.date(2024, 1, 2), datetime.date(2023, 1, 2)}) == [
        "2023-01-02",
        "2024-01-02",
    ]


# --------------------------------------------------------------------------- choices and enums


def test_text_choices_become_plain_strings():
    encoded = encode(Status.LIVE)
    assert encoded == "live"
    assert type(encoded) is str
    assert json.dumps(encode({"s": Status.DRAFT})) == '{"s": "draft"}'


def test_integer_choices_and_int_enums_become_plain_ints():
    from django.db.models import IntegerChoices

    class Rating(IntegerChoices):
        GOOD = 5

    for member, expected in ((Rating.GOOD, 5), (Level.HIGH, 2)):
        encoded = encode(member)
        assert encoded == expected
        assert type(encoded) is int


def test_str_enum_becomes_its_value():
    encoded = encode(Shade.DARK)
    assert encoded == "dark"
    assert type(encoded) is str


def test_str_mixin_enum_becomes_its_value_not_its_name():
    # class Color(str, enum.Enum): str(Color.RED) is "Color.RED", but the database
    # receives "red" (psycopg and sqlite3 adapt the str, not str()).
    encoded = encode(Color.RED)
    assert encoded == "red"
    assert type(encoded) is str


def test_plain_enum_becomes_its_encoded_value():
    assert encode(Priority.URGENT) == "urgent"
    assert encode(Priority.EPOCH) == "1970-01-01"
    assert encode({"p": [Priority.URGENT]}) == {"p": ["urgent"]}


def test_lazy_translation_string_becomes_its_text():
    # gettext_lazy(...) assigned to a CharField is saved as its text; it has an obvious
    # JSON form (Django's own DjangoJSONEncoder writes str(value)).
    encoded = encode(gettext_lazy("hello"))
    assert encoded == "hello"
    assert type(encoded) is str


# --------------------------------------------------------------------------- other types


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ipaddress.ip_address("192.0.2.1"), "192.0.2.1"),
        (ipaddress.ip_address("2001:db8::1"), "2001:db8::1"),
        (ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
        (ipaddress.ip_network("2001:db8::/32"), "2001:db8::/32"),
        (ipaddress.ip_interface("192.0.2.5/24"), "192.0.2.5/24"),
    ],
    ids=str,
)
def test_ip_address_objects_become_strings(value, expected):
    assert encode(value) == expected


def test_field_file_becomes_its_name():
    field = Everything._meta.get_field("attachment")
    assert encode(FieldFile(None, field, "attachments/report.pdf")) == "attachments/report.pdf"
    assert encode(FieldFile(None, field, None)) is None
    assert encode(ImageFieldFile(None, field, "attachments/p.png")) == "attachments/p.png"
    assert encode({"f": [FieldFile(None, field, "a.txt")]}) == {"f": ["a.txt"]}


def test_an_empty_field_file_becomes_its_empty_name_and_a_null_one_none():
    field = Everything._meta.get_field("attachment")
    assert encode(FieldFile(None, field, "")) == ""
    assert encode(FieldFile(None, field, None)) is None


# --------------------------------------------------------------------------- no JSON form


def test_an_object_with_no_json_form_is_stored_as_its_repr_with_a_flag():
    assert encode(Opaque()) == flagged("<Opaque thing>")
    assert encode(fractions.Fraction(1, 3)) == flagged("Fraction(1, 3)")
    assert encode(1 + 2j) == flagged("(1+2j)")


def test_an_object_whose_repr_raises_is_still_flagged():
    encoded = encode(BadRepr())
    assert encoded["unencodable"] is True
    assert isinstance(encoded["repr"], str)
    assert "BadRepr" in encoded["repr"]
    assert strict_json(encoded) == encoded


def test_a_long_repr_is_truncated():
    class Long:
        def __repr__(self) -> str:
            return "x" * (REPR_LIMIT * 5)

    assert encode(Long()) == flagged("x" * REPR_LIMIT)


def test_only_the_unencodable_leaf_is_flagged():
    value = {
        "ok": 1,
        "when": datetime.date(2024, 1, 2),
        "bad": Opaque(),
        "list": [1, Opaque(), "x"],
        "deep": {"bad": BadRepr(), "fine": decimal.Decimal("3")},
    }
    encoded = encode(value)
    assert encoded["ok"] == 1
    assert encoded["when"] == "2024-01-02"
    assert encoded["bad"] == flagged("<Opaque thing>")
    assert encoded["list"] == [1, flagged("<Opaque thing>"), "x"]
    assert encoded["deep"]["fine"] == "3"
    assert encoded["deep"]["bad"]["unencodable"] is True
    assert strict_json(encoded) == encoded


def _self_referencing_list() -> list:
    value: list = []
    value.append(value)
    return value


def _self_referencing_dict() -> dict:
    value: dict = {}
    value["me"] = value
    return value


@pytest.mark.parametrize(
    "value",
    [
        BadEverything(),
        {"k": BadEverything()},
        [BadEverything(), BadRepr()],
        (BadEverything(),),
        {BadRepr()},
        _self_referencing_list(),
        _self_referencing_dict(),
        type,
        object,
        lambda: None,
        iter([1]),
        Ellipsis,
        NotImplemented,
        RuntimeError("boom"),
    ],
    ids=lambda value: type(value).__name__,
)
def test_encode_never_raises(value):
    encoded = encode(value)
    json.dumps(encoded, allow_nan=False)


SAMPLES = [
    "s",
    1,
    1.5,
    math.nan,
    True,
    None,
    decimal.Decimal("1.00"),
    uuid.UUID(int=9),
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.date(2024, 1, 2),
    datetime.time(3, 4, 5),
    datetime.timedelta(hours=1),
    b"\x00",
    bytearray(b"\x01"),
    memoryview(b"\x02"),
    {"a": [1, (2, 3)]},
    {3, 1, 2},
    frozenset({"b", "a"}),
    Status.LIVE,
    Level.LOW,
    ipaddress.ip_address("192.0.2.1"),
    Opaque(),
    BadRepr(),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda value: type(value).__name__)
def test_every_result_is_strict_json_and_stable(value):
    encoded = encode(value)
    assert strict_json(encoded) == encoded
    assert encode(encoded) == encoded  # encoding what was stored changes nothing


# =========================================================================== database


OWNER_TITLE = "owner document"
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
MOMENT = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
BLOB = b"\x00\x01binary\xff"
DOC = {"a": [1, 2.5, None, True], "b": {"c": "d"}, "s": "text"}


def everything_values(owner: Document, twin: Tag) -> dict:
    return {
        "uid": UID,
        "amount": decimal.Decimal("12.50"),
        "ratio": 0.25,
        "big": 2**40,
        "flag": True,
        "day": datetime.date(2024, 5, 6),
        "moment": MOMENT,
        "clock": datetime.time(7, 8, 9, 500),
        "span": datetime.timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5),
        "blob": BLOB,
        "doc": copy.deepcopy(DOC),
        "attachment": "attachments/report.pdf",
        "address": "2001:db8::1",
        "email": "someone@example.com",
        "slug": "a-slug",
        "url": "https://example.com/x",
        "status": Status.LIVE,
        "owner": owner,
        "twin": twin,
    }


def encoded_everything(obj: Everything, owner: Document, twin: Tag) -> dict:
    """What the README says ``changes`` holds for the values of ``everything_values``."""
    return {
        "id": obj.pk,
        "uid": "12345678-1234-5678-1234-567812345678",
        "amount": "12.50",
        "ratio": 0.25,
        "big": 2**40,
        "flag": True,
        "day": "2024-05-06",
        "moment": "2024-05-06T07:08:09.123456+00:00",
        "clock": "07:08:09.000500",
        "span": "P1DT02H03M04.000005S",
        "blob": base64.b64encode(BLOB).decode("ascii"),
        "doc": DOC,
        "attachment": "attachments/report.pdf",
        "address": "2001:db8::1",
        "email": "someone@example.com",
        "slug": "a-slug",
        "url": "https://example.com/x",
        "status": "live",
        "owner": owner.pk,
        "twin": twin.pk,
    }


@pytest.fixture
def owner() -> Document:
    return Document.objects.create(title=OWNER_TITLE)


@pytest.fixture
def twin() -> Tag:
    return Tag.objects.create(name="twin")


@pytest.fixture
def full(owner, twin) -> Everything:
    return Everything.objects.create(**everything_values(owner, twin))


@pytest.mark.django_db(transaction=True)
class TestStoredValues:
    def test_create_stores_every_field_as_design_says(self, full, owner, twin):
        entry = only_entry(full, "create")

        expected = encoded_everything(full, owner, twin)
        assert entry.changes == {name: [None, value] for name, value in expected.items()}
        assert entry.object_pk == str(full.pk)

    def test_keys_are_field_names_and_keys_of_relations_stay_integers(self, full, owner, twin):
        changes = only_entry(full, "create").changes

        assert "owner_id" not in changes
        assert "twin_id" not in changes
        assert changes["owner"] == [None, owner.pk]
        assert changes["twin"] == [None, twin.pk]
        assert type(changes["owner"][1]) is int
        assert type(changes["twin"][1]) is int

    def test_an_update_of_a_loaded_row_records_old_values_as_the_create_recorded_them(
        self, full, owner, twin
    ):
        other_owner = Document.objects.create(title="other")
        other_twin = Tag.objects.create(name="other twin")
        loaded = Everything.objects.get(pk=full.pk)
        loaded.uid = uuid.UUID(int=7)
        loaded.amount = decimal.Decimal("0.05")
        loaded.ratio = -3.5
        loaded.big = -1
        loaded.flag = False
        loaded.day = datetime.date(1999, 12, 31)
        loaded.moment = datetime.datetime(2030, 1, 1, tzinfo=UTC)
        loaded.clock = datetime.time(0, 0)
        loaded.span = datetime.timedelta(minutes=-1)
        loaded.blob = b"new"
        loaded.doc = [1, {"x": None}]
        loaded.attachment = "attachments/other.pdf"
        loaded.address = "192.0.2.1"
        loaded.email = "other@example.com"
        loaded.slug = "other"
        loaded.url = "https://example.org/"
        loaded.status = Status.DRAFT
        loaded.owner = other_owner
        loaded.twin = other_twin
        loaded.save()

        entry = only_entry(full, "update")
        old = encoded_everything(full, owner, twin)
        del old["id"]
        assert entry.changes == {
            name: [value, new]
            for (name, value), new in zip(
                old.items(),
                [
                    "00000000-0000-0000-0000-000000000007",
                    "0.05",
                    -3.5,
                    -1,
                    False,
                    "1999-12-31",
                    "2030-01-01T00:00:00+00:00",
                    "00:00:00",
                    "-P0DT00H01M00S",
                    "bmV3",
                    [1, {"x": None}],
                    "attachments/other.pdf",
                    "192.0.2.1",
                    "other@example.com",
                    "other",
                    "https://example.org/",
                    "draft",
                    other_owner.pk,
                    other_twin.pk,
                ],
                strict=True,
            )
        }

    def test_an_update_records_only_the_fields_that_changed(self, full, owner):
        full.amount = decimal.Decimal("99.99")
        full.status = Status.DRAFT
        full.owner = None
        full.save()

        loaded = Everything.objects.get(pk=full.pk)
        loaded.moment = datetime.datetime(2025, 1, 1, 12, tzinfo=UTC)
        loaded.save()

        first, second = (e for e in trail(full) if e.action == "update")
        assert first.changes == {
            "amount": ["12.50", "99.99"],
            "status": ["live", "draft"],
            "owner": [owner.pk, None],
        }
        assert second.changes == {
            "moment": ["2024-05-06T07:08:09.123456+00:00", "2025-01-01T12:00:00+00:00"]
        }

    def test_saving_without_a_change_records_nothing(self, full):
        full.save()
        loaded = Everything.objects.get(pk=full.pk)
        loaded.save()
        loaded.amount = decimal.Decimal("12.50")
        loaded.moment = MOMENT.astimezone(PARIS)  # the same instant
        loaded.save()

        assert [e.action for e in trail(full)] == ["create"]

    def test_an_in_place_change_of_a_json_value_is_recorded(self, full):
        full.doc["a"].append("more")
        full.doc["new"] = {"k": 1}
        full.save()

        entry = only_entry(full, "update")
        assert entry.changes == {
            "doc": [DOC, {**DOC, "a": [*DOC["a"], "more"], "new": {"k": 1}}],
        }

    def test_delete_records_every_old_value(self, full, owner, twin):
        expected = encoded_everything(full, owner, twin)
        pk = full.pk
        full.delete()
        full.pk = pk

        entry = only_entry(full, "delete")
        assert entry.changes == {name: [value, None] for name, value in expected.items()}

    def test_unset_values_are_stored_as_null(self):
        obj = Everything.objects.create()

        changes = only_entry(obj, "create").changes
        nullable = ("amount", "ratio", "big", "day", "moment", "clock", "span", "blob", "doc")
        for name in (*nullable, "address", "owner", "twin"):
            assert changes[name] == [None, None], name
        assert changes["flag"] == [None, False]
        assert changes["status"] == [None, "draft"]
        assert changes["email"] == [None, ""]
        assert changes["uid"] == [None, str(obj.uid)]

    def test_an_empty_file_is_stored_as_its_empty_name(self):
        obj = Everything.objects.create()

        assert only_entry(obj, "create").changes["attachment"] == [None, ""]

    def test_an_empty_file_is_recorded_alike_on_create_and_on_update_of_a_loaded_row(self):
        obj = Everything.objects.create()
        loaded = Everything.objects.get(pk=obj.pk)
        loaded.attachment = "attachments/first.pdf"
        loaded.save()

        # The create entry and the update entry describe the same empty file: they agree.
        created = only_entry(obj, "create").changes["attachment"]
        updated = only_entry(obj, "update").changes["attachment"]
        assert updated == [created[1], "attachments/first.pdf"]

    def test_clearing_a_file_is_recorded(self, full):
        full.attachment = None
        full.save()
        loaded = Everything.objects.get(pk=full.pk)

        assert not loaded.attachment
        old, new = only_entry(full, "update").changes["attachment"]
        assert old == "attachments/report.pdf"
        assert not new

    def test_a_file_renamed_in_place_is_recorded(self, full):
        # The pattern Django's docs show for moving a stored file:
        #     car.photo.name = "cars/chevy_ii.jpg"; car.save()
        full.attachment.name = "attachments/renamed.pdf"
        full.save()

        assert Everything.objects.get(pk=full.pk).attachment.name == "attachments/renamed.pdf"
        assert only_entry(full, "update").changes == {
            "attachment": ["attachments/report.pdf", "attachments/renamed.pdf"]
        }

    def test_a_file_renamed_in_place_on_a_loaded_row_is_recorded_each_time(self, full):
        loaded = Everything.objects.get(pk=full.pk)
        loaded.attachment.name = "attachments/second.pdf"
        loaded.save()
        loaded.attachment.name = "attachments/third.pdf"
        loaded.save()

        assert [e.changes for e in trail(full) if e.action == "update"] == [
            {"attachment": ["attachments/report.pdf", "attachments/second.pdf"]},
            {"attachment": ["attachments/second.pdf", "attachments/third.pdf"]},
        ]

    def test_choices_are_stored_as_their_plain_value(self):
        obj = Everything.objects.create(status=Status.LIVE)
        obj.status = Status.DRAFT
        obj.save()

        assert [e.changes["status"] for e in trail(obj)] == [[None, "live"], ["live", "draft"]]

    def test_ip_addresses_are_stored_as_strings(self):
        obj = Everything.objects.create(address="192.0.2.1")
        obj.address = "2001:db8::2"
        obj.save()

        assert [e.changes["address"] for e in trail(obj)] == [
            [None, "192.0.2.1"],
            ["192.0.2.1", "2001:db8::2"],
        ]

    def test_a_value_that_cannot_be_encoded_is_stored_as_its_repr_and_the_save_succeeds(self):
        # A FloatField takes anything float() accepts; a Fraction is saved as a float,
        # but has no JSON form of its own.
        obj = Everything.objects.create(ratio=fractions.Fraction(1, 4), big=5)

        assert Everything.objects.get(pk=obj.pk).ratio == 0.25
        changes = only_entry(obj, "create").changes
        assert changes["ratio"] == [None, flagged("Fraction(1, 4)")]
        assert changes["big"] == [None, 5]

        obj.ratio = 0.5
        obj.save()
        assert only_entry(obj, "update").changes == {"ratio": [flagged("Fraction(1, 4)"), 0.5]}

    def test_a_value_whose_repr_raises_is_flagged_and_the_save_succeeds(self):
        class Broken:
            def __float__(self) -> float:
                return 2.0

            def __repr__(self) -> str:
                raise RuntimeError("repr is broken")

        obj = Everything.objects.create(ratio=Broken())

        assert Everything.objects.get(pk=obj.pk).ratio == 2.0
        stored = only_entry(obj, "create").changes["ratio"][1]
        assert stored["unencodable"] is True
        assert "Broken" in stored["repr"]

    def test_an_encoder_that_fails_flags_the_value_and_the_save_succeeds(self, monkeypatch):
        from auditq.stream import encoding

        def broken(value):
            raise ValueError("no")

        monkeypatch.setitem(encoding._BY_TYPE, decimal.Decimal, broken)
        obj = Everything.objects.create(amount=decimal.Decimal("1.50"), big=3)

        assert Everything.objects.get(pk=obj.pk).amount == decimal.Decimal("1.50")
        changes = only_entry(obj, "create").changes
        assert changes["amount"] == [None, flagged("Decimal('1.50')")]
        assert changes["big"] == [None, 3]

    def test_a_lazy_translation_string_is_stored_as_its_text(self):
        obj = Everything.objects.create(slug=gettext_lazy("lazy-slug"))

        assert Everything.objects.get(pk=obj.pk).slug == "lazy-slug"
        assert only_entry(obj, "create").changes["slug"] == [None, "lazy-slug"]


@pytest.mark.django_db(transaction=True)
def test_an_image_is_recorded_by_its_name():
    from tests.testapp.models import Picture

    picture = Picture.objects.create(image="pictures/a.png")
    picture.image.name = "pictures/b.png"
    picture.save()

    assert [e.changes for e in trail(picture)] == [
        {"id": [None, picture.pk], "image": [None, "pictures/a.png"]},
        {"image": ["pictures/a.png", "pictures/b.png"]},
    ]


def test_json_bytes_writes_compact_json_and_integers_beyond_64_bits():
    assert json_bytes({"a": [1, "x", None]}) == b'{"a":[1,"x",null]}'
    big = {"n": 2**70, "m": -(2**65)}
    assert json.loads(json_bytes(big)) == big  # orjson refuses them; the fallback does not
