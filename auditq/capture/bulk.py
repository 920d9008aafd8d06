"""Bulk writes of tracked models -> one change per row: ``QuerySet.update()``,
``bulk_create()`` and ``bulk_update()`` (``QuerySet.delete()`` goes through Django's
collector and its signals already).

Each is wrapped on Django's ``QuerySet`` itself, so custom managers and querysets are
covered as long as they call ``super()``. The rows' changes are made inside the bulk
write's transaction and ride in its one outbox row, as a save's do.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from django.db import connections, models, router, transaction
from django.db.models import QuerySet
from django.db.models.base import ModelState

from auditq import registry
from auditq.backends import backend
from auditq.capture.receivers import capture_many
from auditq.capture.shape import shape_of, tracked_parents
from auditq.capture.snapshot import LOADED, saved

GUARDED = "__auditq_bulk__"
_WRITING: ContextVar[bool] = ContextVar("auditq_bulk_writing", default=False)
"""Set while a wrapped bulk method runs: Django's ``bulk_update()`` calls ``update()``,
whose rows it has captured itself."""


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """Hold the cyclic garbage collector off while a bulk write captures its rows.

    A change per row allocates thousands of objects that reference counting frees when
    the write is done: counted as new allocations, they would start collections over the
    whole heap (measured: a 1,000-row ``update()`` spent half its time there) for no
    garbage at all. Left as it was if something else had turned it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _captured(model: Any) -> bool:
    tracking = registry.tracking(model)
    if tracking is not None:
        return tracking.bulk
    return any(found.bulk for _, found in tracked_parents(model))


def _using(queryset: QuerySet) -> str:
    """The database a write through ``queryset`` goes to (as ``QuerySet.db`` says once
    the queryset is marked for writing)."""
    found: Any = queryset  # private attributes, as QuerySet.db reads them
    return found._db or router.db_for_write(found.model, **found._hints)


def _guard_bulk_create(bulk_create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(bulk_create)
    def guarded(self: QuerySet, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> Any:
        model = self.model
        conflicts = kwargs.get("ignore_conflicts") or kwargs.get("update_conflicts")
        if not _captured(model) or conflicts or (len(args) > 1 and any(args[1:3])):
            # With conflicts allowed the database does not say which rows it wrote.
            return bulk_create(self, objs, *args, **kwargs)
        using = _using(self)
        objs = list(objs)
        with _no_collection(), transaction.atomic(using=using, savepoint=False):
            created = bulk_create(self, objs, *args, **kwargs)
            rows = [obj for obj in created if obj.pk is not None]  # the key came back
            connection = connections[using]
            capture_many(
                model,
                rows,
                True,
                connection,
                None,
                lambda o: saved(model, o, True, None),
                distinct=True,
            )
        return created

    setattr(guarded, GUARDED, True)
    return guarded


def _guard_bulk_update(bulk_update: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(bulk_update)
    def guarded(
        self: QuerySet,
        objs: Iterable[models.Model],
        fields: Sequence[str],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        model = self.model
        if not _captured(model):
            return bulk_update(self, objs, fields, *args, **kwargs)
        using = _using(self)
        objs = list(objs)
        names = frozenset(fields)
        with _no_collection(), transaction.atomic(using=using, savepoint=False):
            token = _WRITING.set(True)
            try:
                rows = bulk_update(self, objs, fields, *args, **kwargs)
            finally:
                _WRITING.reset(token)
            # Each against the values it was loaded with, as save() does.
            connection = connections[using]
            capture_many(
                model, objs, False, connection, names, lambda o: saved(model, o, False, names)
            )
        return rows

    setattr(guarded, GUARDED, True)
    return guarded


def _guard_update(update: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(update)
    def guarded(self: QuerySet, **kwargs: Any) -> Any:
        model = self.model
        query = self.query
        if not kwargs or _WRITING.get() or query.is_sliced or query.combinator:
            return update(self, **kwargs)  # nothing to capture, or Django refuses it
        if not _captured(model):
            return update(self, **kwargs)
        try:
            fields = {name: model._meta.get_field(name) for name in kwargs}
        except Exception:
            return update(self, **kwargs)  # Django says what is wrong
        using = _using(self)
        with _no_collection(), transaction.atomic(using=using, savepoint=False):
            return _update(self, update, fields, kwargs, using)

    setattr(guarded, GUARDED, True)
    return guarded


def _update(
    queryset: QuerySet,
    update: Callable[..., Any],
    fields: dict[str, Any],
    kwargs: dict[str, Any],
    using: str,
) -> int:
    """Read the rows' old values (one ``SELECT``, the rows locked where the database can),
    update exactly those rows, and capture one change per row."""
    model: Any = queryset.model
    meta = model._meta
    tracking = registry.tracking(model)
    whole = (tracking is not None and tracking.whole_rows) or any(
        found.whole_rows for _, found in tracked_parents(model)
    )
    key = [f.attname for f in meta.pk_fields]  # one column, or a composite key's
    if whole:
        attnames = [f.attname for f in meta.concrete_fields]
    else:
        attnames = list(dict.fromkeys([*key, *(f.attname for f in fields.values())]))
    computed, plain = [], {}
    for name, value in kwargs.items():
        field = fields[name]
        if hasattr(value, "resolve_expression"):
            computed.append(field.attname)  # the database computes it: read it back
        elif field.is_relation and isinstance(value, models.Model):
            plain[field.attname] = getattr(value, field.target_field.attname)
        else:
            plain[field.attname] = field.to_python(value)
    computed += [a for a in sorted(shape_of(model).generated) if a in attnames]
    connection = connections[using]
    rows = list(_locked(queryset, connection).values_list(*attnames))
    names = frozenset(f.name for f in fields.values())
    base = model._base_manager.using(using)
    at = [attnames.index(a) for a in key]
    keys = [_key(row, at) for row in rows]
    count = 0
    one = None
    if keys and all(type(found) is int for found in keys):
        one = backend(connection).keys_where(connection, meta.db_table, meta.pk.column, keys)
    size = len(rows) if one else _batch_size(connection)
    for start in range(0, len(rows), size or 1):
        batch = rows[start : start + size]
        # Exactly the rows read: one that starts to match meanwhile is not updated unseen.
        these = (
            base.extra(where=[one[0]], params=one[1])
            if one
            else base.filter(pk__in=keys[start : start + size])
        )
        count += update(these, **kwargs)
        instances = [_instance(model, using, row, attnames, plain) for row in batch]
        if computed:
            width = len(key)
            read = these.values_list(*key, *computed)
            fresh = {_key(found, range(width)): found[width:] for found in read}
            for instance, its in zip(instances, keys[start : start + size], strict=True):
                instance.__dict__.update(zip(computed, fresh.get(its, ()), strict=False))
        capture_many(model, instances, False, connection, names, distinct=True)
    return count


def _key(row: Sequence[Any], at: Sequence[int]) -> Any:
    """The primary key in ``row`` (its columns at ``at``): a value, or a composite key's
    tuple."""
    if len(at) == 1:
        return row[at[0]]
    return tuple(row[i] for i in at)


def _instance(
    model: Any, using: str, row: Sequence[Any], attnames: Sequence[str], new: dict[str, Any]
) -> models.Model:
    """The row as the update left it (``row`` as read, ``new`` on top), built as
    ``from_db()`` would but without ``__init__`` (thousands of rows): what consumers see;
    ``row`` is its snapshot. A field not read is deferred, as with ``only()``."""
    instance = model.__new__(model)
    state = ModelState()
    state.adding = False
    state.db = using
    old = dict(zip(attnames, row, strict=True))
    values = instance.__dict__
    values.update(old)
    values.update(new)
    values["_state"] = state
    values[LOADED] = old
    return instance


def _locked(queryset: QuerySet, connection: Any) -> QuerySet:
    """``queryset`` locking the rows it reads until the commit, where the database can
    (``FOR UPDATE OF`` its own table; SQLite's write lock covers the transaction)."""
    features = connection.features
    if queryset.query.distinct or not features.has_select_for_update:
        return queryset
    if features.has_select_for_update_of:
        return queryset.select_for_update(of=("self",))
    return queryset.select_for_update()


def _batch_size(connection: Any) -> int:
    """Keys per ``UPDATE ... WHERE pk IN (...)``: within the database's parameter limit."""
    limit = connection.features.max_query_params or 10_000
    return max(1, min(limit - 100, 10_000))


def install() -> None:
    """Wrap ``QuerySet.update``, ``bulk_create`` and ``bulk_update`` (once): untracked
    models pay one cached lookup per bulk call."""
    if getattr(QuerySet.update, GUARDED, False):
        return
    QuerySet.update = _guard_update(QuerySet.update)  # type: ignore[method-assign]
    QuerySet.bulk_create = _guard_bulk_create(QuerySet.bulk_create)  # type: ignore[method-assign]
    QuerySet.bulk_update = _guard_bulk_update(QuerySet.bulk_update)  # type: ignore[method-assign]
