"""PostgreSQL-only field types in ``AuditEntry.changes``: arrays as lists, ranges as objects.

Ranges are stored as ``{"lower": ..., "upper": ..., "bounds": "[)"}`` with encoded bounds,
an empty range as ``{"empty": true}``.
"""

from __future__ import annotations

import datetime
import decimal

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange, NumericRange

from auditq.stream.encoding import encode
from tests.helpers import only_entry, trail
from tests.pgapp.models import PgEverything

pytestmark = pytest.mark.django_db(transaction=True)

UTC = datetime.UTC
START = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
END = datetime.datetime(2024, 5, 7, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _on_postgresql() -> None:
    assert connection.vendor == "postgresql", "tests/postgres runs only in the PostgreSQL pass"


@pytest.fixture
def row() -> PgEverything:
    return PgEverything.objects.create(
        name="row",
        numbers=[3, 1, 2],
        tags=["a", "b"],
        ages=NumericRange(18, 65),
        window=DateTimeTZRange(START, END),
        prices=NumericRange(decimal.Decimal("1.50"), decimal.Decimal("9.99"), "[]"),
    )


# --------------------------------------------------------------------------- encode itself


def test_a_range_is_encoded_with_its_bounds():
    assert encode(NumericRange(1, 10)) == {"lower": 1, "upper": 10, "bounds": "[)"}
    assert encode(NumericRange(1, 10, "[]")) == {"lower": 1, "upper": 10, "bounds": "[]"}
    # psycopg turns the bound of an unbounded side exclusive: "(]" becomes "()".
    assert encode(NumericRange(decimal.Decimal("0.5"), None, "(]")) == {
        "lower": "0.5",
        "upper": None,
        "bounds": "()",
    }
    assert encode(DateTimeTZRange(START, END)) == {
        "lower": "2024-05-06T07:08:09+00:00",
        "upper": "2024-05-07T00:00:00+00:00",
        "bounds": "[)",
    }


def test_an_unbounded_range_keeps_null_bounds():
    assert encode(NumericRange(None, None)) == {"lower": None, "upper": None, "bounds": "()"}
    assert encode(NumericRange(None, 5, "[]")) == {"lower": None, "upper": 5, "bounds": "(]"}


def test_an_empty_range_is_encoded_as_empty():
    assert encode(NumericRange(empty=True)) == {"empty": True}
    assert encode(DateTimeTZRange(empty=True)) == {"empty": True}


def test_ranges_inside_containers_are_encoded():
    assert encode({"r": [NumericRange(1, 2), NumericRange(empty=True)]}) == {
        "r": [{"lower": 1, "upper": 2, "bounds": "[)"}, {"empty": True}]
    }


# --------------------------------------------------------------------------- stored entries


def test_create_stores_arrays_as_lists_and_ranges_as_objects(row):
    entry = only_entry(row, "create")

    assert entry.changes == {
        "id": [None, row.pk],
        "name": [None, "row"],
        "numbers": [None, [3, 1, 2]],
        "tags": [None, ["a", "b"]],
        "ages": [None, {"lower": 18, "upper": 65, "bounds": "[)"}],
        "window": [
            None,
            {
                "lower": "2024-05-06T07:08:09+00:00",
                "upper": "2024-05-07T00:00:00+00:00",
                "bounds": "[)",
            },
        ],
        "prices": [None, {"lower": "1.50", "upper": "9.99", "bounds": "[]"}],
    }


def test_unset_arrays_and_ranges():
    obj = PgEverything.objects.create()

    changes = only_entry(obj, "create").changes
    assert changes["numbers"] == [None, []]
    assert changes["tags"] == [None, []]
    assert changes["ages"] == [None, None]
    assert changes["window"] == [None, None]
    assert changes["prices"] == [None, None]


def test_an_update_of_a_loaded_row_records_arrays_and_ranges(row):
    loaded = PgEverything.objects.get(pk=row.pk)
    loaded.numbers = [4]
    loaded.tags = []
    loaded.ages = NumericRange(empty=True)
    loaded.window = DateTimeTZRange(START, None)
    loaded.prices = None
    loaded.save()

    assert only_entry(row, "update").changes == {
        "numbers": [[3, 1, 2], [4]],
        "tags": [["a", "b"], []],
        "ages": [{"lower": 18, "upper": 65, "bounds": "[)"}, {"empty": True}],
        "window": [
            {
                "lower": "2024-05-06T07:08:09+00:00",
                "upper": "2024-05-07T00:00:00+00:00",
                "bounds": "[)",
            },
            {"lower": "2024-05-06T07:08:09+00:00", "upper": None, "bounds": "[)"},
        ],
        # PostgreSQL stores a numeric range as given: the loaded old value is the same.
        "prices": [{"lower": "1.50", "upper": "9.99", "bounds": "[]"}, None],
    }


def test_an_update_records_only_the_fields_that_changed(row):
    row.ages = NumericRange(21, 65)
    row.save()

    assert only_entry(row, "update").changes == {
        "ages": [
            {"lower": 18, "upper": 65, "bounds": "[)"},
            {"lower": 21, "upper": 65, "bounds": "[)"},
        ]
    }


def test_saving_an_unchanged_loaded_row_records_nothing(row):
    loaded = PgEverything.objects.get(pk=row.pk)
    loaded.save()
    loaded.numbers = [3, 1, 2]
    loaded.window = DateTimeTZRange(START, END)
    loaded.save()

    assert [e.action for e in trail(row)] == ["create"]


def test_an_in_place_append_to_an_array_is_recorded(row):
    row.tags.append("x")
    row.save()

    assert only_entry(row, "update").changes == {"tags": [["a", "b"], ["a", "b", "x"]]}


def test_in_place_changes_of_a_loaded_row_are_recorded_each_time(row):
    loaded = PgEverything.objects.get(pk=row.pk)
    loaded.numbers.append(4)
    loaded.save()
    loaded.numbers.sort()
    loaded.tags.remove("a")
    loaded.save()
    loaded.numbers[0] = 0
    loaded.save()

    assert [e.changes for e in trail(row) if e.action == "update"] == [
        {"numbers": [[3, 1, 2], [3, 1, 2, 4]]},
        {"numbers": [[3, 1, 2, 4], [1, 2, 3, 4]], "tags": [["a", "b"], ["b"]]},
        {"numbers": [[1, 2, 3, 4], [0, 2, 3, 4]]},
    ]
    assert PgEverything.objects.get(pk=row.pk).numbers == [0, 2, 3, 4]


def test_delete_records_arrays_and_ranges_as_old_values(row):
    pk = row.pk
    row.delete()
    row.pk = pk

    changes = only_entry(row, "delete").changes
    assert changes["numbers"] == [[3, 1, 2], None]
    assert changes["ages"] == [{"lower": 18, "upper": 65, "bounds": "[)"}, None]
    assert changes["prices"] == [{"lower": "1.50", "upper": "9.99", "bounds": "[]"}, None]
