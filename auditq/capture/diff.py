"""A save's changes: the tracked fields that differ from the snapshot, JSON-safe."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterable
from typing import Any

from django.db import models

from auditq import registry
from auditq.capture.shape import shape_of
from auditq.capture.snapshot import SHARED, loaded_values
from auditq.stream.encoding import MASK, PLAIN, encode

MISSING: Any = object()


def _changed(old: Any, new: Any) -> tuple[Any, Any] | None:
    try:
        if old == new:
            return None
    except Exception:
        pass
    old, new = encode(old), encode(new)
    return None if old == new else (old, new)


def _as_saved(
    instance: models.Model, name: str, old: Any, new: Any, pair: tuple[Any, Any]
) -> tuple[Any, Any] | None:
    """``pair``, unless ``new`` (of another type than the loaded value: ``"5"`` set on a
    ``DecimalField`` that loaded ``Decimal("5.00")``) equals ``old`` once the field turns
    it into what it saves: then the row did not change. Only on this rare path, so a
    save whose values keep their types pays nothing for it."""
    field = type(instance)._meta.get_field(name)
    try:
        saved = field.to_python(new)  # type: ignore[union-attr]  # a column: a Field
    except Exception:  # a value the field refuses: the save itself will say so
        return pair
    return None if _changed(old, saved) is None else pair


def _same_json(old: Any, new: Any) -> bool:
    """Equal as JSON columns keep them: ``True`` is not ``1``, ``1`` is not ``1.0``."""
    kind = type(old)
    if kind is not type(new):
        return False
    if kind is dict:
        return old.keys() == new.keys() and all(_same_json(v, new[k]) for k, v in old.items())
    if kind is list or kind is tuple:
        return len(old) == len(new) and all(map(_same_json, old, new))
    if kind is decimal.Decimal:
        return str(old) == str(new)
    try:
        return bool(old == new)
    except Exception:
        return False


def _changed_json(old: Any, new: Any, code: Callable[[Any], Any] | None) -> tuple[Any, Any] | None:
    if code is not None:
        old, new = code(old), code(new)
    if _same_json(old, new):
        return None
    return (old, new) if code is not None else (encode(old), encode(new))


def saved_fields(
    tracking: registry.Tracking,
    model: type[models.Model],
    update_fields: Iterable[str] | None,
) -> tuple[registry.TrackedField, ...]:
    """The tracked fields a save of ``update_fields`` (``None``: all) may change: those
    named, and the generated columns, which the database sets at every save. Resolved once
    per bulk call, not once per row."""
    if update_fields is None:
        return tracking.fields
    saved = frozenset(update_fields)
    generated = shape_of(model).generated
    return tuple(
        field
        for field in tracking.fields
        if field.name in saved or field.attname in saved or field.attname in generated
    )


def diff(
    tracking: registry.Tracking,
    instance: models.Model,
    update_fields: Iterable[str] | None = None,
) -> dict[str, list[Any]]:
    """Return ``{name: [old, new]}`` for the tracked fields that differ from the snapshot."""
    return diff_fields(saved_fields(tracking, type(instance), update_fields), instance)


def diff_fields(
    fields: Iterable[registry.TrackedField], instance: models.Model
) -> dict[str, list[Any]]:
    """:func:`diff` of the given fields (from :func:`saved_fields`)."""
    values = instance.__dict__
    loaded = loaded_values(instance)
    shape = shape_of(type(instance))
    exact = shape.exact
    changes = {}
    for field in fields:
        attname = field.attname
        new = values.get(attname, MISSING)
        old = loaded.get(attname, MISSING)
        if new is MISSING or old is MISSING:
            continue
        kind = type(new)
        if kind is type(old) and kind in SHARED and old == new and attname not in exact:
            continue  # unchanged: the common case, decided without a call
        if kind not in SHARED and hasattr(new, "resolve_expression"):
            continue  # left to the database, which could not say what it wrote
        if attname in exact:
            pair = _changed_json(old, new, shape.coders.get(attname))
        else:
            pair = _changed(old, new)
            if pair is not None and kind is not type(old) and old is not None:
                pair = _as_saved(instance, field.name, old, new, pair)
        if pair is not None:
            changes[field.name] = [MASK, MASK] if field.masked else list(pair)
    return changes


def every_value(
    tracking: registry.Tracking, instance: models.Model, *, deleted: bool
) -> dict[str, list]:
    """``{name: [None, value]}`` for a create, ``{name: [last value, None]}`` for a delete."""
    values = instance.__dict__
    last = loaded_values(instance) if deleted else None
    coders = shape_of(type(instance)).coders
    changes = {}
    for field in tracking.fields:
        attname = field.attname
        if last is not None and attname in last:
            value = last[attname]
        elif attname in values:
            value = values[attname]
        else:
            continue
        if type(value) not in PLAIN and hasattr(value, "resolve_expression"):
            continue  # a db_default the database could not return: its value is unknown
        if field.masked:
            value = MASK
        elif type(value) not in PLAIN:
            value = coders[attname](value) if attname in coders else encode(value)
        changes[field.name] = [value, None] if deleted else [None, value]
    return changes
