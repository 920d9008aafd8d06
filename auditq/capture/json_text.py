"""A JSON column's text as the database sent it: the snapshot's copy of a loaded JSON
value, kept while Django decodes it instead of encoding the value again.

A loaded dict or list may be edited in place before a save, so the snapshot needs a copy
of it as it was loaded. The database already sent one: the text Django's converter
decodes. The converter installed here is Django's, plus one store: it leaves
``(decoded value, text)`` in the field's slot, and ``from_db()``, which runs right after
the row's converters, takes the text if the decoded value it was handed *is* that one.
Any other order (a ``values()`` query, the same field twice in a ``select_related()``
row, another thread) finds another object there and encodes the value itself.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import models

SLOT = "auditq_slot"
"""Attribute of the installed converter: its one-item list holding the last
``(decoded value, text)``, replaced in one store (another thread never sees half of it)."""

EMPTY: tuple[Any, Any] = (None, None)
"""A slot's content before a row, and after ``from_db()`` took the text (the slot does not
keep the last value alive)."""

_NO_SLOT: list[tuple[Any, Any]] = [EMPTY]
"""The slot of a field with Django's converter: its decoded values are never in it."""

_DJANGO = models.JSONField.from_db_value


def keep_text(field: models.Field) -> None:
    """Install the text-keeping converter on ``field`` if it is a JSON field decoded as
    Django decodes it (its own ``from_db_value()`` and the default decoder)."""
    if (
        not isinstance(field, models.JSONField)
        or "from_db_value" in field.__dict__
        or type(field).from_db_value is not _DJANGO
        or field.decoder not in (None, json.JSONDecoder)
    ):
        return
    django = field.from_db_value
    slot: list[tuple[Any, Any]] = [EMPTY]
    loads = json.loads
    decode_error = json.JSONDecodeError

    def from_db_value(value: Any, expression: Any, connection: Any) -> Any:
        # Django's own, for a text: json.loads() with the default decoder, and the text
        # itself if it is not JSON. Anything else (None, SQLite's numbers for a key
        # transform) goes to Django's.
        if type(value) is not str:
            return django(value, expression, connection)
        try:
            decoded = loads(value)
        except decode_error:
            return value
        slot[0] = (decoded, value)
        return decoded

    setattr(from_db_value, SLOT, slot)
    field.from_db_value = from_db_value  # type: ignore[method-assign]


def slot_of(field: models.Field) -> list[tuple[Any, Any]]:
    """The slot ``field``'s converter fills (one that never matches if it has none)."""
    return getattr(field.__dict__.get("from_db_value"), SLOT, _NO_SLOT)
