"""The values an instance was loaded with: near-free at load, compared at save."""

from __future__ import annotations

import datetime
import decimal
import functools
import json as json_module
import uuid
from collections.abc import Callable, Iterable
from json import loads as json_loads
from typing import Any, NamedTuple

from django.db import models
from django.db.models.fields.files import FieldFile
from orjson import dumps

from auditq import registry
from auditq.capture.json_text import EMPTY, slot_of
from auditq.capture.shape import shape_of, snapshot_attnames
from auditq.stream.encoding import PLAIN

LOADED = "_auditq_loaded"
"""Instance attribute holding ``{attname: value}`` as last read from or written to the DB."""
ROW = "_auditq_row"
"""Instance attribute holding the row as ``from_db()`` got it (concrete fields in order,
the values list itself): :func:`loaded_values` turns it into ``LOADED`` at the first need,
so that loading rows that are never saved costs next to nothing. Set by name
(``instance._auditq_row``) where rows are loaded: an attribute store costs less than a
``__dict__`` one."""
KEPT = "_auditq_kept"
"""Instance attribute holding, beside ``ROW``, the loaded form of the row's mutable values
(a JSON column's text, a copy of an array), in the order of ``_Columns.kept``: the
instance's own objects may be edited in place before a save. ``None`` where the loaded
value is immutable; with one JSON column and nothing else mutable, its text alone, or no
attribute at all."""


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


def loaded_values(instance: models.Model) -> dict[str, Any]:
    """``{attname: value}`` as the database last held them (empty for an instance built
    in code): the snapshot, built from the loaded row the first time it is asked for."""
    values = instance.__dict__
    loaded = values.get(LOADED)
    if loaded is None:
        row = values.pop(ROW, None)
        kept = values.pop(KEPT, None)
        loaded = values[LOADED] = {} if row is None else _read(type(instance), row, kept)
    return loaded


def _read(model: type[models.Model], row: Any, kept: Any) -> dict[str, Any]:
    columns = _columns(model)
    attnames = columns.attnames
    loaded = dict(zip(attnames, row, strict=True))
    if kept is None:  # nothing mutable was loaded
        return loaded
    if type(kept) is not tuple:  # one JSON column's text, alone
        kept = (kept,)
    json = len(columns.json)
    for n, (i, frozen) in enumerate(zip(columns.kept, kept, strict=True)):
        if frozen is None:  # the value in the row is immutable
            continue
        if n >= json:  # a copy of another mutable value
            loaded[attnames[i]] = frozen
        else:  # a JSON column's text, decoded as Django decodes it
            loaded[attnames[i]] = frozen.value if type(frozen) is _Copied else json_loads(frozen)
    return loaded


class _Copied:
    """A JSON value orjson cannot write (an integer beyond 64 bits): kept as a copy."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = _copy(value)


def snapshot(instance: models.Model, attnames: Iterable[str]) -> None:
    """Remember the current values of ``attnames`` as the database's."""
    values = instance.__dict__
    loaded = loaded_values(instance)
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
    loaded = loaded_values(instance)
    unknown = [a for a in attnames if a in values and a not in loaded]
    if unknown:
        model = type(instance)
        row = model._base_manager.using(using).filter(pk=instance.pk).values(*unknown).first()
        loaded.update(row or {})


class _Columns(NamedTuple):
    """How a model's rows arrive in ``from_db()``, resolved once per model."""

    width: int
    """How many values a fully loaded row has; -1 if the model needs no snapshot (an
    untracked subclass of a tracked model)."""
    attnames: tuple[str, ...]
    """Its concrete fields' attnames, in the order of ``from_db()``'s values."""
    json: tuple[int, ...]
    """Positions of JSON fields with the default decoder: kept as their JSON text."""
    mutable: tuple[int, ...]
    """Positions of other fields whose values may be mutable (arrays, custom fields):
    copied at load, or an edit in place would reach the snapshot too."""
    kept: tuple[int, ...]
    """``json``, then ``mutable``: the positions whose loaded form is kept apart (JSON as
    its text)."""
    slots: tuple[list[tuple[Any, Any]], ...]
    """The slots the ``json`` columns' converters leave their text in
    (:mod:`auditq.capture.json_text`)."""


_IMMUTABLE_FIELDS = (
    models.BooleanField,
    models.CharField,  # and every text-like field: EmailField, SlugField, URLField...
    models.DateField,  # and DateTimeField
    models.DecimalField,
    models.DurationField,
    models.FileField,  # the column's text: a FieldFile appears only when it is read
    models.FloatField,
    models.ForeignKey,  # the raw key (OneToOneField too)
    models.GenericIPAddressField,
    models.IntegerField,  # and every integer and auto field
    models.TextField,
    models.TimeField,
    models.UUIDField,
)


@registry.derived
@functools.cache
def _columns(model: type[models.Model]) -> _Columns:
    fields = model._meta.concrete_fields
    json = tuple(
        i
        for i, f in enumerate(fields)
        if isinstance(f, models.JSONField) and f.decoder in (None, json_module.JSONDecoder)
    )
    mutable = tuple(
        i for i, f in enumerate(fields) if i not in json and not isinstance(f, _IMMUTABLE_FIELDS)
    )
    return _Columns(
        width=len(fields) if snapshot_attnames(model) else -1,
        attnames=tuple(f.attname for f in fields),
        json=json,
        mutable=mutable,
        kept=(*json, *mutable),
        slots=tuple(slot_of(fields[i]) for i in json),
    )


_BY_MODEL: dict[type[models.Model], tuple[int, int, list[tuple[Any, Any]], _Columns]] = {}
""":func:`_plan` by model, read with one dict lookup per loaded row."""

_UNRESOLVED = -3
"""A guard's own model's row width before its first load (and after a registry change)."""

_FORGET: list[Callable[[], None]] = []
"""What makes each guard resolve its own model's plan again."""


class _PlanCache:
    @staticmethod
    def cache_clear() -> None:
        _BY_MODEL.clear()
        for forget in _FORGET:
            forget()


registry.derived(_PlanCache)


def guard_from_db(model: type[models.Model], from_db: Callable) -> classmethod:
    """Keep the row an instance was loaded with (instances built in code need none).

    The values list as it came, and the loaded form of its mutable values (a JSON dict
    or list as the text the database sent): the snapshot is built from them only when a
    save, a delete or a refresh needs it (:func:`loaded_values`). With Django's own
    ``from_db()``, a row of ``model`` itself, fully loaded, takes the fast path: the
    instance built here as Django does, the plan held in the closure (no lookup per row).
    Proxies, subclasses and deferred loads take the general one.
    """
    default = from_db is _DEFAULT_FROM_DB
    by_model = _BY_MODEL
    containers = _CONTAINERS
    width = _UNRESOLVED
    one = -1
    slot: list[tuple[Any, Any]] = []

    def forget() -> None:
        nonlocal width
        width = _UNRESOLVED

    _FORGET.append(forget)

    def general(cls: type[models.Model], db: str, field_names: Any, values: Any) -> Any:
        found = by_model.get(cls)
        if found is None:
            found = by_model[cls] = _plan(cls)
        width, one, slot, columns = found
        if len(values) != width:  # deferred fields, or an untracked subclass
            instance = from_db(cls, db, field_names, values)
            if width >= 0:
                snapshot(instance, snapshot_attnames(cls))
            return instance
        instance = from_db(cls, db, field_names, values)
        _keep(instance, values, one, slot, columns)
        return instance

    def loaded(cls: type[models.Model], db: str, field_names: Any, values: Any) -> Any:
        nonlocal width, one, slot
        if len(values) != width or cls is not model:
            if width == _UNRESOLVED and cls is model and default:
                found = _plan(model)
                one, slot = found[1], found[2]
                width = found[0]  # last: a thread that sees it sees the others
                return loaded(cls, db, field_names, values)
            return general(cls, db, field_names, values)
        # Django's from_db(), inline: one call less per row.
        instance: Any = cls(*values)
        state = instance._state
        state.adding = False
        state.db = db
        # Attribute stores, not __dict__ ones: Python keeps an instance's attributes
        # inline until its __dict__ is asked for, and asking builds it.
        instance._auditq_row = values
        if one >= 0:  # the common case: one JSON column, nothing else mutable
            value = values[one]
            if type(value) in containers:
                pair = slot[0]
                if pair[0] is value:
                    instance._auditq_kept = pair[1]
                    slot[0] = EMPTY
                else:
                    instance._auditq_kept = _text(value)
        elif one == -2:
            instance._auditq_kept = _kept(_columns(model), values)
        return instance

    return classmethod(functools.wraps(from_db)(loaded))


def _keep(
    instance: models.Model,
    values: Any,
    one: int,
    slot: list[tuple[Any, Any]],
    columns: _Columns,
) -> None:
    """Keep the row ``instance`` was fully loaded from, and its mutable values' loaded form
    (what :func:`guard_from_db`'s fast path does inline)."""
    instance._auditq_row = values  # type: ignore[attr-defined]
    if one >= 0:
        value = values[one]
        if type(value) in _CONTAINERS:
            instance._auditq_kept = _taken(slot, value)  # type: ignore[attr-defined]
    elif one == -2:
        instance._auditq_kept = _kept(columns, values)  # type: ignore[attr-defined]


def _plan(
    model: type[models.Model],
) -> tuple[int, int, list[tuple[Any, Any]], _Columns]:
    """What ``from_db()`` does with ``model``'s rows: their width; ``one``: the position
    of the one JSON column kept alone, -1 if nothing is kept, -2 otherwise; that column's
    slot."""
    columns = _columns(model)
    json = columns.json
    one = json[0] if len(json) == 1 and not columns.mutable else -2 if columns.kept else -1
    return columns.width, one, columns.slots[0] if one >= 0 else [], columns


_DEFAULT_FROM_DB = models.Model.from_db.__func__  # type: ignore[attr-defined]

_CONTAINERS = frozenset({dict, list})
"""What a JSON column decodes to that may be edited in place."""


def _text(value: Any) -> Any:
    """A JSON value's text, encoded here (its converter did not keep the database's)."""
    try:
        # Decoded: the bytes orjson returns keep the whole buffer it wrote into.
        return dumps(value).decode()
    except TypeError:  # orjson's: an integer beyond 64 bits, say
        return _Copied(value)


def _taken(slot: list[tuple[Any, Any]], value: Any) -> Any:
    """A loaded JSON value's text: the database's, if its converter left it in ``slot``
    (the slot emptied), or encoded here."""
    pair = slot[0]
    if pair[0] is value:
        slot[0] = EMPTY
        return pair[1]
    return _text(value)


def _kept(columns: _Columns, values: Any) -> tuple[Any, ...]:
    """The loaded form of a row's mutable values, in the order of ``columns.kept``."""
    kept: list[Any] = []
    for i, slot in zip(columns.json, columns.slots, strict=True):
        value = values[i]
        if type(value) in _CONTAINERS:
            kept.append(_taken(slot, value))
        else:
            kept.append(None)
    for i in columns.mutable:
        value = values[i]
        kept.append(None if type(value) in SHARED else _copy(value))
    return tuple(kept)


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
