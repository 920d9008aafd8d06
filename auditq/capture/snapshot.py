"""The values an instance was loaded with: near-free at load, compared at save."""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.db import models
from django.db.models.fields.files import FieldFile

from auditq.capture.shape import shape_of, snapshot_attnames
from auditq.stream.encoding import PLAIN

LOADED = "_auditq_loaded"
"""Instance attribute holding ``{attname: value}`` as last read from or written to the DB."""


def _copy(value: Any) -> Any:
    # Mutable values: a snapshot sharing them would miss in-place edits. JSON and arrays
    # are copied (their dicts and lists, four times faster than deepcopy); a file is
    # remembered by its name (FieldFile compares equal to it).
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in SHARED else _copy(v) for k, v in value.items()}
    if kind is list:
        return [item if type(item) in SHARED else _copy(item) for item in value]
    if isinstance(value, FieldFile):
        return value.name
    return value


SHARED = frozenset(
    {*PLAIN, float, decimal.Decimal, datetime.datetime, datetime.date, datetime.time}
    | {datetime.timedelta, uuid.UUID}
)
"""Immutable value types: a snapshot may hold the instance's own object."""


def snapshot(instance: models.Model, attnames: Iterable[str]) -> None:
    """Remember the current values of ``attnames`` as the database's."""
    values = instance.__dict__
    loaded = values.setdefault(LOADED, {})
    for attname in attnames:
        if attname in values:
            value = values[attname]
            if type(value) in SHARED:
                loaded[attname] = value
            elif hasattr(value, "resolve_expression"):
                # The database decides it (a db_default it could not return): unknown
                # until read, as a deferred field is.
                loaded.pop(attname, None)
            else:
                loaded[attname] = _copy(value)


def saved(
    model: type[models.Model],
    instance: models.Model,
    created: bool,
    update_fields: frozenset[str] | None,
) -> None:
    """Take the saved values as the new snapshot (what the next save compares with)."""
    attnames = snapshot_attnames(model)
    if update_fields is None or created:
        snapshot(instance, attnames)
    else:
        generated = shape_of(model).generated
        fields = instance._meta.concrete_fields
        saved = [f.attname for f in fields if {f.name, f.attname} & update_fields]
        snapshot(instance, [a for a in (*saved, *generated) if a in attnames])


def load_unknown(instance: models.Model, using: str, attnames: frozenset[str]) -> None:
    """Read the old values of fields that were deferred at load and have been set since.

    The only case where auditq reads before a save: the instance never had those values.
    """
    if instance._state.adding or instance.pk is None:
        return
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    unknown = [a for a in attnames if a in values and a not in loaded]
    if unknown:
        model = type(instance)
        row = model._base_manager.using(using).filter(pk=instance.pk).values(*unknown).first()
        loaded.update(row or {})


def guard_from_db(from_db: Callable) -> classmethod:
    """Snapshot what an instance was loaded with (instances built in code need none)."""

    def loaded(cls: type[models.Model], db: str, field_names: Any, values: Any) -> Any:
        instance = from_db(cls, db, field_names, values)
        attnames = snapshot_attnames(cls)
        if attnames:
            snapshot(instance, attnames)
        return instance

    return classmethod(functools.wraps(from_db)(loaded))


def guard_refresh(refresh_from_db: Callable) -> Callable:
    """Take a new snapshot of what ``refresh_from_db()`` read from the database."""

    @functools.wraps(refresh_from_db)
    def refreshed(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        result = refresh_from_db(self, *args, **kwargs)
        attnames = snapshot_attnames(type(self))
        if attnames:
            snapshot(self, attnames)
        return result

    return refreshed
