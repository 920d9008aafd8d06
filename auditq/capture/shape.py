"""What a tracked model's fields need beyond a plain comparison, resolved once per model."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from django.db import models

from auditq import registry
from auditq.stream.encoding import encode


class Shape(NamedTuple):
    """What a model's fields need beyond a plain comparison, resolved once per model."""

    exact: frozenset[str]
    """Attnames of JSON columns: compared by type as well as value (``True`` is not ``1``)."""
    coders: dict[str, Callable[[Any], Any]]
    """Attnames of JSON columns with their own encoder, and that encoder's JSON."""
    generated: frozenset[str]
    """Attnames of generated columns: the database sets them, at every save."""
    returning: dict[str, tuple[models.Field, ...]]
    """Each table with generated columns, and those columns."""
    settable: tuple[models.Field, ...]
    """Fields a save may set to an SQL expression (``F()``, a ``db_default``): all but the
    key and the generated columns."""
    parents: tuple[type[models.Model], ...]
    """Multi-table inheritance ancestors, nearest first."""


def _json_coder(encoder: type[json.JSONEncoder]) -> Callable[[Any], Any]:
    def code(value: Any) -> Any:
        try:
            return json.loads(json.dumps(value, cls=encoder))
        except Exception:
            return encode(value)

    return code


def concrete(model: type[models.Model]) -> type[models.Model]:
    """The model whose table holds ``model``'s rows (itself unless it is a proxy)."""
    return cast(type[models.Model], model._meta.concrete_model)


@functools.cache
def shape_of(model: type[models.Model]) -> Shape:
    meta = concrete(model)._meta
    fields = meta.concrete_fields
    json_fields = [f for f in fields if isinstance(f, models.JSONField)]
    generated = [f for f in fields if f.generated]
    returning: dict[str, tuple[models.Field, ...]] = {}
    for field in generated:
        table = cast(Any, field.model)._meta.db_table
        returning[table] = (*returning.get(table, ()), field)
    return Shape(
        exact=frozenset(f.attname for f in json_fields),
        coders={
            f.attname: _json_coder(f.encoder)
            for f in json_fields
            if f.encoder not in (None, json.JSONEncoder)
        },
        generated=frozenset(f.attname for f in generated),
        returning=returning,
        settable=tuple(f for f in fields if not f.generated and not f.primary_key),
        parents=tuple(meta.get_parent_list()),
    )


@registry.derived
@functools.cache
def tracked_parents(model: type[models.Model]) -> tuple[tuple[type[models.Model], Any], ...]:
    """``(parent, tracking)`` of each tracked multi-table ancestor: a child's save is
    recorded on each of their trails too, with their own fields."""
    found = []
    for parent in shape_of(model).parents:
        tracking = registry.tracking(parent)
        if tracking is not None:
            found.append((parent, tracking))
    return tuple(found)


@registry.derived
@functools.cache
def snapshot_attnames(model: type[models.Model]) -> frozenset[str]:
    tracking = registry.tracking(model)
    attnames = tracking.attnames if tracking is not None else frozenset()
    for _, found in tracked_parents(model):
        attnames = attnames | found.attnames
    return attnames
