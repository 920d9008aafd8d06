"""An entry's hash: SHA-256 over one canonical JSON document of its content and the hash
before it in its chain.

The document is what the database gives back, whatever the path a value took to it
(orjson on the worker, ``jsonb`` or SQLite text, psycopg or the sqlite3 module): so the
worker hashes a row before writing it and ``auditq_verify`` recomputes the same hash
from the row it reads. The README spells the document out for auditors who recompute it
elsewhere.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import ipaddress
import json
import re
import uuid
from typing import Any

import orjson

GENESIS = ""
"""What the first entry of a chain links to."""

_INTEGRAL = re.compile(rb"\.0\b|\de")
"""What an integral float (or any with an exponent) may look like in JSON text: the
values a database may give back as integers (``jsonb`` reads 1e16 as 10000000000000000
and 5.0 as 5.0, SQLite keeps the float)."""
_WIDE = re.compile(r"\d{19}")
"""A number orjson would read as a float (beyond 64 bits) may be in the text."""


def entry_hash(previous: str, content: dict[str, Any]) -> str:
    """The hex SHA-256 of ``content`` (see :func:`document`) linked to ``previous``."""
    return hashlib.sha256(document(previous, content)).hexdigest()


def document(previous: str, content: dict[str, Any]) -> bytes:
    """The canonical document: a JSON object of the entry's fields and ``previous``,
    keys sorted, no spaces, UTF-8.

    ``content`` holds the entry's columns (``content_type_id``, ``event_id``,
    ``object_pk``, ``object_repr``, ``action``, ``changes``, ``actor_id``,
    ``actor_repr``, ``remote_addr``, ``request_id``, ``context``, ``occurred_at``,
    ``recorded_at``) as either side has them; each is written in one form: the event id
    as a hyphenated UUID, the actor's key as text, the address as Python's
    ``ipaddress`` writes it, times in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, and an
    integral float in ``changes`` or ``context`` as the integer it is.
    """
    actor_id = content["actor_id"]
    body = {
        "previous": previous,
        "content_type": int(content["content_type_id"]),
        "event_id": str(_uuid(content["event_id"])),
        "object_pk": content["object_pk"],
        "object_repr": content["object_repr"],
        "action": content["action"],
        "changes": _json(content["changes"]),
        "actor_id": None if actor_id is None else str(actor_id),
        "actor_repr": content["actor_repr"],
        "remote_addr": _address(content["remote_addr"]),
        "request_id": content["request_id"],
        "context": _json(content["context"]),
        "occurred_at": _time(content["occurred_at"]),
        "recorded_at": _time(content["recorded_at"]),
    }
    written = _dumps(body)
    if _INTEGRAL.search(written):
        body["changes"] = _plain(body["changes"])
        body["context"] = _plain(body["context"])
        written = _dumps(body)
    return written


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits: the standard library writes it exactly
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _json(value: Any) -> Any:
    """JSON data, decoded if the database handed it over as text."""
    if isinstance(value, str):
        return json.loads(value) if _WIDE.search(value) else orjson.loads(value)
    return value


def _plain(value: Any) -> Any:
    """``value`` with every integral float as the integer it is (its shortest decimal
    form: 1e300 is 10**300, as ``jsonb`` reads it)."""
    if isinstance(value, float):
        return int(decimal.Decimal(repr(value))) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _address(value: Any) -> str | None:
    if value is None or value == "":
        return None
    address = ipaddress.ip_address(str(value))
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def _time(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
