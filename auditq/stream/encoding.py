"""Field values to JSON-safe values, exactly as ``AuditEntry.changes`` stores them.

Encoding runs on the request path, so it never raises: a value it cannot encode is
stored as ``{"repr": "...", "unencodable": true}`` and the user's save goes on.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import json
import math
import uuid
from typing import Any

import orjson
from django.db import models
from django.db.models.fields.files import FieldFile
from django.utils.duration import duration_iso_string
from django.utils.functional import Promise

MASK = "***"
"""What a masked value is stored as, old and new alike."""

REPR_LIMIT = 1000

PLAIN = frozenset({str, int, bool, type(None)})
"""Types that are their own JSON: :func:`encode` returns them as they are (callers on the
request path test ``type(value) in PLAIN`` first and skip the call)."""


def _float(value: float) -> Any:
    return value if math.isfinite(value) else str(value)


# Containers skip the call for items that are their own JSON: most of a JSON column's.
def _mapping(value: dict) -> dict[str, Any]:
    return {
        key if type(key) is str else str(key): item if type(item) in PLAIN else encode(item)
        for key, item in value.items()
    }


def _sequence(value: list | tuple) -> list[Any]:
    return [item if type(item) in PLAIN else encode(item) for item in value]


def _range(value: Any) -> dict[str, Any]:
    if value.isempty:
        return {"empty": True}
    return {"lower": encode(value.lower), "upper": encode(value.upper), "bounds": value.bounds}


def _file(value: FieldFile) -> str | None:
    # The stored name: "" for an empty file, None for NULL, as the column holds them.
    return value.name


def _set(value: set | frozenset) -> list[Any]:
    items = _sequence(list(value))
    try:
        return sorted(items)
    except TypeError:  # mixed types: any stable order will do
        return sorted(items, key=repr)


def _bytes(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


_BY_TYPE: dict[type, Any] = {
    float: _float,
    decimal.Decimal: str,
    uuid.UUID: str,
    datetime.datetime: datetime.datetime.isoformat,
    datetime.date: datetime.date.isoformat,
    datetime.time: datetime.time.isoformat,
    datetime.timedelta: duration_iso_string,
    dict: _mapping,
    list: _sequence,
    tuple: _sequence,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
}

# Checked in order when the exact type is not in _BY_TYPE (subclasses: enum choices,
# FieldFile subclasses, psycopg ranges, sets, IP address objects, ...).
_BY_BASE: tuple[tuple[type, Any], ...] = (
    (enum.Enum, lambda value: encode(value.value)),
    (bool, bool),
    (str, str.__str__),
    (int, int.__index__),
    (FieldFile, _file),
    (Promise, str),
    *_BY_TYPE.items(),
    (frozenset, _set),
    (set, _set),
)


def _is_range(value: Any) -> bool:
    return all(hasattr(value, name) for name in ("lower", "upper", "bounds", "isempty"))


def json_bytes(data: Any) -> bytes:
    """``data`` (JSON-safe, as :func:`encode` returns) as compact JSON: orjson, or the
    standard library for integers beyond 64 bits, where orjson stops. A value that is not
    JSON-safe after all (a consumer's capture data) is encoded on the way, never raised
    into the commit of the user's save."""
    try:
        return orjson.dumps(data, default=encode)
    except orjson.JSONEncodeError:
        # encode() first: keys that are not strings, and NaN, which json writes as is.
        return json.dumps(encode(data), separators=(",", ":"), default=encode).encode()


def unencodable(value: Any) -> dict[str, Any]:
    """Return the flagged stand-in for a value that has no JSON form."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__qualname__}>"
    return {"repr": text[:REPR_LIMIT], "unencodable": True}


def encode(value: Any) -> Any:
    """Return ``value`` as JSON-safe data; never raise.

    Decimal and UUID become strings, dates and times ISO 8601, durations ISO 8601
    durations, binary data base64, files their name, ranges
    ``{"lower", "upper", "bounds"}``; containers are encoded item by item.
    """
    kind = type(value)
    if kind in PLAIN:
        return value
    try:
        handler = _BY_TYPE.get(kind)
        if handler is None:
            handler = next((h for base, h in _BY_BASE if isinstance(value, base)), None)
        if handler is None:
            if _is_range(value):
                return _range(value)
            if type(value).__module__ == "ipaddress":
                return str(value)
            return unencodable(value)
        return handler(value)
    except Exception:
        return unencodable(value)


def truncated(value: Any, limit: int) -> Any:
    """``value`` (JSON-safe) as it travels when its JSON is longer than ``limit``
    characters: ``{"truncated": true, "length": N, "head": "<its first limit
    characters>"}`` (a string's own text, other values' JSON text); else ``value``."""
    if type(value) is str:
        text = value
    elif type(value) in (dict, list):
        text = json_bytes(value).decode()
    else:
        return value  # numbers, booleans, null: short by nature
    if len(text) <= limit:
        return value
    return {"truncated": True, "length": len(text), "head": text[:limit]}


def is_truncated(value: Any) -> bool:
    """Whether ``value`` is the marker :func:`truncated` leaves."""
    return type(value) is dict and value.get("truncated") is True and "head" in value


class Unknown(ValueError):
    """A value the trail does not hold: it was stored as an unencodable repr, or
    truncated."""


def decode(field: Any, value: Any) -> Any:
    """The inverse of :func:`encode` for a value of the model field ``field``, as the
    trail keeps it: the Python value the field holds (a ``Decimal``, a ``datetime``, a
    foreign key's raw key, a file's name, JSON as it is).

    Raises:
        Unknown: the value was stored as ``{"repr": ..., "unencodable": true}``, or
            truncated (``{"truncated": true, ...}``).
    """
    if value is None:
        return None
    if isinstance(value, dict) and value.get("unencodable") is True:
        raise Unknown(f"{field.name}: only its repr was kept ({value.get('repr')!r}).")
    if is_truncated(value):
        raise Unknown(f"{field.name}: only its first {len(value['head'])} characters were kept.")
    if isinstance(field, models.JSONField):
        return value
    if isinstance(field, models.FileField):
        return value  # the stored name
    base = getattr(field, "base_field", None)  # PostgreSQL's ArrayField
    if base is not None and isinstance(value, list):
        return [decode(base, item) for item in value]
    range_type = getattr(field, "range_type", None)  # PostgreSQL's range fields
    if range_type is not None and isinstance(value, dict):
        if value.get("empty"):
            return range_type(empty=True)
        inner = base() if isinstance(base, type) else base  # a class on range fields
        lower, upper = (decode(inner, value.get(end)) for end in ("lower", "upper"))
        return range_type(lower, upper, value.get("bounds", "[)"))
    if field.is_relation:
        field = field.target_field
    return field.to_python(value)
