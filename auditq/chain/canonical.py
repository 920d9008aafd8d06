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
import functools
import hashlib
import ipaddress
import json
import re
import uuid
from typing import Any

import orjson

GENESIS = ""
"""What the first entry of a chain links to."""

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
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
    ``ipaddress`` writes it, times in UTC as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (no
    fraction when it is zero), and in ``changes`` and ``context`` a float of 1e16 or more
    as the integer it is and -0.0 as 0.0.
    """
    actor_id = content["actor_id"]
    event_id = content["event_id"]
    address = content["remote_addr"]
    body = {
        "previous": previous,
        "content_type": content["content_type_id"],
        "event_id": event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id)),
        "object_pk": content["object_pk"],
        "object_repr": content["object_repr"],
        "action": content["action"],
        "changes": _json(content["changes"]),
        "actor_id": None if actor_id is None else str(actor_id),
        "actor_repr": content["actor_repr"],
        "remote_addr": _address(address) if address else None,
        "request_id": content["request_id"],
        "context": _json(content["context"]),
        "occurred_at": _time(content["occurred_at"]),
        "recorded_at": _time(content["recorded_at"]),
    }
    written = _dumps(body)
    # A float written with a positive exponent, or -0.0, is a number jsonb gives back
    # otherwise (an integer; 0.0): written in that form (in a string, it costs a walk).
    if b"e+" in written or b"-0.0" in written:
        body["changes"] = _plain(body["changes"])
        body["context"] = _plain(body["context"])
        written = _dumps(body)
    return written


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits: the standard library writes it exactly
        plain = {**body, "event_id": str(body["event_id"])}
        for name in ("occurred_at", "recorded_at"):
            plain[name] = orjson.loads(orjson.dumps(body[name], option=_OPTIONS))
        return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _json(value: Any) -> Any:
    """JSON data, decoded if the database handed it over as text."""
    if isinstance(value, str):
        return json.loads(value) if _WIDE.search(value) else orjson.loads(value)
    return value


def _plain(value: Any) -> Any:
    """``value`` with its floats of 1e16 or more as the integers they are (in their
    shortest decimal form: 1e300 is 10**300, as ``jsonb`` reads it) and -0.0 as 0.0."""
    if isinstance(value, float):
        if abs(value) >= 1e16 and value.is_integer():
            return int(decimal.Decimal(repr(value)))
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@functools.lru_cache(maxsize=4096)
def _address(value: Any) -> str:
    address = ipaddress.ip_address(str(value))
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def _time(value: Any) -> datetime.datetime:
    """The time in UTC (orjson writes it, with ``Z``; a naive time is taken as UTC)."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    zone = value.tzinfo
    if zone is not None and zone is not datetime.UTC and value.utcoffset():
        return value.astimezone(datetime.UTC)
    return value
