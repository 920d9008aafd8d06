"""Turn saves, deletes and many-to-many changes of tracked models into changes, in memory.

A model is *tracked* when some consumer wants its changes (``@audited`` models, for the
audit trail). Old values come from a snapshot taken when an instance is loaded
(``from_db``) and refreshed after every save, so an update of a loaded instance issues no
``SELECT``. Each change asks every consumer of its model what it wants; a change no
consumer wants is dropped on the spot. The surviving changes go to :mod:`auditq.outbox`:

* a lone autocommit ``save()`` or ``delete()`` on PostgreSQL hands its change to the
  row's own statement, which writes the outbox row in the same round trip;
* anything else (a transaction, another database) is captured by Django's ``post_save``
  / ``post_delete`` / ``m2m_changed`` signals and held until the commit.

Deletes of a single tracked instance with nothing to cascade take Django's one-statement
path, as an untracked model's delete would; the rest go through Django's collector. A
model's own ``delete()`` (or a base class's) is never wrapped: it runs as written.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import json
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, NamedTuple, cast

from django.apps import apps
from django.db import connections, models, router, transaction
from django.db.models import sql
from django.db.models.deletion import DO_NOTHING, get_candidate_relations_to_delete
from django.db.models.fields.files import FieldFile
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from auditq import context, outbox, registry
from auditq.encoding import MASK, PLAIN, encode
from auditq.events import PK_SLOT, Change

LOADED = "_auditq_loaded"
"""Instance attribute holding ``{attname: value}`` as last read from or written to the DB."""
REPR_LIMIT = 200
_MISSING: Any = object()
_CLEARING = "_auditq_clearing"
_WRITES: dict[int, outbox.Write] = {}
"""The lone saves in flight (PostgreSQL), by ``id()`` of the instance: ``post_save`` finds
there, without a connection lookup, that the save's own statement carried its change."""
_GUARDED = "__auditq_guard__"


def _copy(value: Any) -> Any:
    # Mutable values: a snapshot sharing them would miss in-place edits. JSON and arrays
    # are copied (their dicts and lists, four times faster than deepcopy); a file is
    # remembered by its name (FieldFile compares equal to it).
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _SHARED else _copy(v) for k, v in value.items()}
    if kind is list:
        return [item if type(item) in _SHARED else _copy(item) for item in value]
    if isinstance(value, FieldFile):
        return value.name
    return value


_SHARED = frozenset(
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
            if type(value) in _SHARED:
                loaded[attname] = value
            elif hasattr(value, "resolve_expression"):
                # The database decides it (a db_default it could not return): unknown
                # until read, as a deferred field is.
                loaded.pop(attname, None)
            else:
                loaded[attname] = _copy(value)


class _QueryRefused(Exception):
    """A ``__str__`` tried to query while auditq took the repr."""


def _refuse(*args: Any) -> Any:
    raise _QueryRefused


def _object_repr(
    instance: models.Model, connection: Any, text: Callable[[Any], str] = str
) -> str | None:
    """``str(instance)`` if it needs no query, else ``None`` (the worker takes it then).

    A ``__str__`` that follows a relation not loaded yet would cost the request a
    ``SELECT``: the connection refuses any statement while the repr is taken.
    """
    wrappers = connection.execute_wrappers
    wrappers.append(_refuse)
    try:
        return text(instance)[:REPR_LIMIT]
    except Exception:
        return None
    finally:
        wrappers.remove(_refuse)


class _Shape(NamedTuple):
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


def _concrete(model: type[models.Model]) -> type[models.Model]:
    """The model whose table holds ``model``'s rows (itself unless it is a proxy)."""
    return cast(type[models.Model], model._meta.concrete_model)


@functools.cache
def _shape(model: type[models.Model]) -> _Shape:
    meta = _concrete(model)._meta
    fields = meta.concrete_fields
    json_fields = [f for f in fields if isinstance(f, models.JSONField)]
    generated = [f for f in fields if f.generated]
    returning: dict[str, tuple[models.Field, ...]] = {}
    for field in generated:
        table = cast(Any, field.model)._meta.db_table
        returning[table] = (*returning.get(table, ()), field)
    return _Shape(
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
def _tracked_parents(model: type[models.Model]) -> tuple[tuple[type[models.Model], Any], ...]:
    """``(parent, tracking)`` of each tracked multi-table ancestor: a child's save is
    recorded on each of their trails too, with their own fields."""
    found = []
    for parent in _shape(model).parents:
        tracking = registry.tracking(parent)
        if tracking is not None:
            found.append((parent, tracking))
    return tuple(found)


def _changed(old: Any, new: Any) -> tuple[Any, Any] | None:
    try:
        if old == new:
            return None
    except Exception:
        pass
    old, new = encode(old), encode(new)
    return None if old == new else (old, new)


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


def diff(
    tracking: registry.Tracking,
    instance: models.Model,
    update_fields: Iterable[str] | None = None,
) -> dict[str, list[Any]]:
    """Return ``{name: [old, new]}`` for the tracked fields that differ from the snapshot."""
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    saved = None if update_fields is None else frozenset(update_fields)
    shape = _shape(type(instance))
    exact, generated = shape.exact, shape.generated
    changes = {}
    for field in tracking.fields:
        attname = field.attname
        if (
            saved is not None
            and not (field.name in saved or attname in saved)
            and attname not in generated
        ):
            continue
        new = values.get(attname, _MISSING)
        old = loaded.get(attname, _MISSING)
        if new is _MISSING or old is _MISSING:
            continue
        kind = type(new)
        if kind is type(old) and kind in _SHARED and old == new and attname not in exact:
            continue  # unchanged: the common case, decided without a call
        if kind not in _SHARED and hasattr(new, "resolve_expression"):
            continue  # left to the database, which could not say what it wrote
        if attname in exact:
            pair = _changed_json(old, new, shape.coders.get(attname))
        else:
            pair = _changed(old, new)
        if pair is not None:
            changes[field.name] = [MASK, MASK] if field.masked else list(pair)
    return changes


def _every_value(
    tracking: registry.Tracking, instance: models.Model, *, deleted: bool
) -> dict[str, list]:
    """``{name: [None, value]}`` for a create, ``{name: [last value, None]}`` for a delete."""
    values = instance.__dict__
    last = values.get(LOADED, {}) if deleted else None
    coders = _shape(type(instance)).coders
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


def clear_values(
    instance: models.Model, action: str, fields: Iterable[registry.TrackedField]
) -> dict[str, list[Any]]:
    """``{name: [old, new]}`` of ``fields`` before any masking, for a consumer that must
    see what masking hides (callbacks seal them for their handlers).

    Old values are the snapshot (still the database's while consumers are asked), new
    ones the instance's; a create has no old value, a delete no new one.
    """
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    clear = {}
    for field in fields:
        new = values.get(field.attname)
        if action == "create":
            clear[field.name] = [None, new]
        elif action == "delete":
            clear[field.name] = [loaded.get(field.attname, new), None]
        else:
            clear[field.name] = [loaded.get(field.attname), new]
    return clear


def _change(
    tracking: registry.Tracking,
    instance: models.Model | None,
    pk: Any,
    describe: Callable[[], str | None] | None,
    action: str,
    changes: dict[str, Any],
) -> Change | None:
    """Ask the model's consumers what they want of this change; ``None`` if nothing.

    ``describe()`` gives the object's repr, taken only for a change someone wants.
    """
    current = context.current()
    wanted = {}
    for consumer in tracking.consumers:
        data = consumer.capture(tracking.model, instance, action, changes, current)
        if data is not None:
            wanted[consumer.name] = data
    if not wanted:
        return None
    repr_ = None if describe is None else describe()
    return Change(tracking.label, pk, repr_, action, changes, time.time(), current, wanted)


# --------------------------------------------------------------------------- signals


def _on_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool,
    using: str,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    write = _WRITES.get(id(instance))
    if write is not None and write.instance is instance and write.recorded:
        # The save's own statement carried its change (a lone save on PostgreSQL).
        _saved(sender, instance, created, update_fields)
        return
    tracking = registry.tracking(sender)
    parents = _tracked_parents(sender)
    if raw or (tracking is None and not parents):
        return
    connection = connections[using]
    action = "create" if created else "update"
    if tracking is not None:
        if created:
            changes = _every_value(tracking, instance, deleted=False)
        else:
            changes = diff(tracking, instance, update_fields)
        describe = functools.partial(_object_repr, instance, connection)
        change = _change(tracking, instance, encode(instance.pk), describe, action, changes)
        if change is not None:
            outbox.add(connection, change)
    for parent, found in parents:
        # The parent's trail: its own fields, under its own key and text.
        if created:
            changes = _every_value(found, instance, deleted=False)
        else:
            changes = diff(found, instance, update_fields)
        key = encode(getattr(instance, parent._meta.pk.attname))
        describe = functools.partial(_object_repr, instance, connection, parent.__str__)
        change = _change(found, instance, key, describe, action, changes)
        if change is not None:
            outbox.add(connection, change)
    _saved(sender, instance, created, update_fields)


def _saved(
    model: type[models.Model],
    instance: models.Model,
    created: bool,
    update_fields: frozenset[str] | None,
) -> None:
    """Take the saved values as the new snapshot (what the next save compares with)."""
    attnames = _snapshot_attnames(model)
    if update_fields is None or created:
        snapshot(instance, attnames)
    else:
        generated = _shape(model).generated
        fields = instance._meta.concrete_fields
        saved = [f.attname for f in fields if {f.name, f.attname} & update_fields]
        snapshot(instance, [a for a in (*saved, *generated) if a in attnames])


@registry.derived
@functools.cache
def _snapshot_attnames(model: type[models.Model]) -> frozenset[str]:
    tracking = registry.tracking(model)
    attnames = tracking.attnames if tracking is not None else frozenset()
    for _, found in _tracked_parents(model):
        attnames = attnames | found.attnames
    return attnames


def _on_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    tracking = registry.tracking(sender)
    if tracking is None:
        return
    connection = connections[using]
    change = _delete_change(tracking, instance, connection)
    if change is not None:
        outbox.add(connection, change)


def _delete_change(
    tracking: registry.Tracking, instance: models.Model, connection: Any
) -> Change | None:
    changes = _every_value(tracking, instance, deleted=True)
    describe = functools.partial(_object_repr, instance, connection)
    return _change(tracking, instance, encode(instance.pk), describe, "delete", changes)


def _m2m_owners(
    model: type[models.Model], field: Any
) -> list[tuple[type[models.Model], registry.Tracking]]:
    """The tracked models that record ``field`` for an instance of ``model``: the model
    itself and its tracked multi-table ancestors that have the field."""
    found = []
    for owner in (_concrete(model), *_shape(model).parents):
        tracking = registry.tracking(owner)
        if (
            tracking is not None
            and any(f.name == field.name for f in tracking.m2m)
            and any(f is field for f in owner._meta.many_to_many)
        ):
            found.append((owner, tracking))
    return found


@functools.cache
def _hides_rows(model: type[models.Model]) -> bool:
    """Whether ``model``'s default manager filters rows: Django's related managers then
    leave the through rows of hidden objects in place on ``remove()`` and ``clear()``."""
    return bool(model._default_manager.get_queryset().query.has_filters())


def _m2m_receiver(field: Any) -> Callable[..., None]:
    """One receiver per many-to-many relation, whichever tracked models record it."""
    through: Any = field.remote_field.through
    sources = through._meta.get_field(field.m2m_field_name())
    targets = through._meta.get_field(field.m2m_reverse_field_name())

    def going(instance: models.Model, reverse: bool, using: str, keys: Any) -> set[Any]:
        # The through rows Django's remove() / clear() will delete: those of the objects
        # the other side's default manager shows. One SELECT.
        mine, theirs = (targets, sources) if reverse else (sources, targets)
        value = getattr(instance, mine.target_field.attname)
        rows = through._base_manager.using(using).filter(**{mine.attname: value})
        if keys is not None:
            rows = rows.filter(**{f"{theirs.attname}__in": keys})
        other = field.model if reverse else field.related_model
        if _hides_rows(other):
            shown = other._default_manager.db_manager(using).get_queryset()
            rows = rows.filter(**{f"{theirs.name}__in": shown.values(theirs.target_field.attname)})
        return set(rows.values_list(theirs.attname, flat=True))

    def receiver(
        sender: Any,
        instance: models.Model,
        action: str,
        reverse: bool,
        model: Any,
        pk_set: Any,
        using: str,
        **kwargs: Any,
    ) -> None:
        owners = _m2m_owners(model if reverse else type(instance), field)
        if not owners:
            return
        pending = instance.__dict__.setdefault(_CLEARING, {})
        if action == "pre_clear":
            # clear() sends no keys: read them now.
            pending[field] = going(instance, reverse, using, None)
            return
        if action == "pre_remove":
            other = field.model if reverse else field.related_model
            if _hides_rows(other) and pk_set:
                pending[field] = going(instance, reverse, using, pk_set)
            return
        if action in ("post_clear", "post_remove"):
            pk_set = pending.pop(field, pk_set)
            kind = "removed"
        elif action == "post_add":
            kind = "added"
        else:
            return
        if not pk_set:
            return
        connection = connections[using]
        if reverse:
            for _, tracking in owners:
                for pk in encode(pk_set):
                    changes = {
                        field.name: {"added": [], "removed": [], kind: [encode(instance.pk)]}
                    }
                    change = _change(tracking, None, pk, None, "update", changes)
                    if change is not None:
                        outbox.add(connection, change)
            return
        keys = encode(set(pk_set))
        for owner, tracking in owners:
            changes = {field.name: {"added": [], "removed": [], kind: keys}}
            key = encode(getattr(instance, owner._meta.pk.attname))
            describe = functools.partial(_object_repr, instance, connection, owner.__str__)
            change = _change(tracking, instance, key, describe, "update", changes)
            if change is not None:
                outbox.add(connection, change)

    return receiver


# --------------------------------------------------------------------------- the one-statement path


@functools.cache
def _statement_prefixes(model: type[models.Model], using: str) -> tuple[str, str, str]:
    table = connections[using].ops.quote_name(model._meta.db_table)
    return (f"INSERT INTO {table} ", f"UPDATE {table} SET ", f"DELETE FROM {table} WHERE ")


def _save_statement_change(
    tracking: registry.Tracking, instance: models.Model, update_fields: Any, connection: Any
) -> Callable[[str], Change | None]:
    """Build the change of a save from its statement (``I``nsert or ``U``pdate)."""

    def build(verb: str) -> Change | None:
        describe = functools.partial(_object_repr, instance, connection)
        if verb == "U":
            changes = diff(tracking, instance, update_fields)
            return _change(tracking, instance, encode(instance.pk), describe, "update", changes)
        if instance.pk is not None and not hasattr(instance.pk, "resolve_expression"):
            changes = _every_value(tracking, instance, deleted=False)
            return _change(tracking, instance, encode(instance.pk), describe, "create", changes)
        # The database assigns the key in this statement (a sequence, a db_default): write
        # a slot where it goes (in the changes and in the repr, if the repr shows it); the
        # statement keeps the key beside the payload and the worker fills the slot.
        attname = instance._meta.pk.attname
        unset = instance.__dict__[attname]
        instance.__dict__[attname] = PK_SLOT
        try:
            changes = _every_value(tracking, instance, deleted=False)
            repr_ = _object_repr(instance, connection)
        finally:
            instance.__dict__[attname] = unset
        return _change(tracking, instance, PK_SLOT, lambda: repr_, "create", changes)

    return build


def _guard_save(save_base: Callable) -> Callable:
    """Give a tracked save its outbox row in the same transaction.

    In autocommit mode a plain ``save()`` commits before ``post_save`` is sent: without
    this the change and its outbox row would commit separately, and a crash between them
    would lose the change. On PostgreSQL the row's own statement writes the outbox row
    (one round trip, no transaction block); elsewhere the save runs in a transaction.
    """

    @functools.wraps(save_base)
    def guarded(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        model = type(self)
        tracking = registry.tracking(model)
        if (tracking is None and not _tracked_parents(model)) or kwargs.get(
            "raw", args[0] if args else False
        ):
            return save_base(self, *args, **kwargs)
        using = kwargs.get("using") or router.db_for_write(model, instance=self)
        _load_unknown(self, using, _snapshot_attnames(model))
        connection = connections[using]
        alone = outbox.alone(connection)
        shape = _shape(model)
        returning = _decided_by_database(self, shape)
        if returning:
            # Generated columns change with the row, and F() expressions are computed by
            # the UPDATE: it returns their new values (Django 5.2 leaves the instance's
            # stale), so diffs and snapshots stay true. An INSERT returns db_default
            # values itself; post_save sees them.
            reader = _generated_reader(self, returning, connection)
            # Not connection.execute_wrapper(): it pops the last wrapper, which may be one
            # installed meanwhile (auditq's own outbox hook on a new connection).
            connection.execute_wrappers.append(reader)
            try:
                with transaction.atomic(using=using, savepoint=False) if alone else nullcontext():
                    return save_base(self, *args, **kwargs)
            finally:
                connection.execute_wrappers.remove(reader)
        if not alone:
            return save_base(self, *args, **kwargs)
        if tracking is None or connection.vendor != "postgresql" or shape.parents:
            # Elsewhere (or with parent tables to write too) the save gets a transaction.
            with transaction.atomic(using=using, savepoint=False):
                return save_base(self, *args, **kwargs)
        found = outbox.state(connection)
        previous, outer = found.write, _WRITES.get(id(self))  # outer: a save in post_save
        write = found.write = _WRITES[id(self)] = outbox.Write(
            self,
            _statement_prefixes(model, using)[:2],
            _save_statement_change(tracking, self, kwargs.get("update_fields"), connection),
        )
        try:
            result = save_base(self, *args, **kwargs)
        finally:
            found.write = previous
            if outer is None:
                del _WRITES[id(self)]
            else:
                _WRITES[id(self)] = outer
        if write.recorded:
            outbox.committed(connection)
        return result

    setattr(guarded, _GUARDED, True)
    return guarded


@functools.cache
def _deletes_alone(model: type[models.Model]) -> bool:
    """Whether Django would delete ``model``'s rows one statement at a time, were it not
    for auditq's own ``post_delete`` receiver (the collector's fast path)."""
    meta = _concrete(model)._meta
    return (
        not meta.parents
        and all(
            related.field.remote_field.on_delete is DO_NOTHING
            for related in cast(Iterable[Any], get_candidate_relations_to_delete(meta))
        )
        and not any(hasattr(field, "bulk_related_objects") for field in meta.private_fields)
    )


def _only_auditq_listens(model: type[models.Model]) -> bool:
    try:
        for signal in (pre_delete, post_delete):
            sync, asynchronous = signal._live_receivers(model)
            if any(receiver is not _on_delete for receiver in (*sync, *asynchronous)):
                return False
    except (AttributeError, TypeError, ValueError):  # another Django: be conservative
        return False
    return True


def _guard_delete(delete: Callable) -> Callable:
    """Delete a lone tracked instance in one statement, as Django does an untracked one.

    Installed over Django's own ``Model.delete`` only, never over a user's override.

    Django's collector takes its one-statement path only for models without delete
    signal receivers, so auditq's own ``post_delete`` receiver (needed for cascades)
    would cost every tracked delete a transaction block.
    """

    @functools.wraps(delete)
    def guarded(self: models.Model, using: str | None = None, keep_parents: bool = False) -> Any:
        model = type(self)
        tracking = registry.tracking(model)
        if (
            tracking is None
            or keep_parents
            or self.pk is None
            or not _deletes_alone(model)
            or not _only_auditq_listens(model)
        ):
            return delete(self, using=using, keep_parents=keep_parents)
        using = using or router.db_for_write(model, instance=self)
        connection = connections[using]
        change = _delete_change(tracking, self, connection)
        alone = outbox.alone(connection)
        if change is None:
            count = _delete_row(model, self.pk, using)
        elif alone and connection.vendor == "postgresql":  # the row's statement writes it
            found = outbox.state(connection)
            previous = found.write
            prefix = _statement_prefixes(model, using)[2]
            write = found.write = outbox.Write(self, (prefix,), lambda verb: change)
            try:
                count = _delete_row(model, self.pk, using)
            finally:
                found.write = previous
            if write.recorded:
                outbox.committed(connection)
        else:
            with transaction.atomic(using=using, savepoint=False) if alone else nullcontext():
                count = _delete_row(model, self.pk, using)
                if count:
                    outbox.add(connection, change)
        setattr(self, model._meta.pk.attname, None)
        return count, {model._meta.label: count}

    return guarded


def _delete_row(model: type[models.Model], pk: Any, using: str) -> int:
    with transaction.mark_for_rollback_on_error(using):
        return sql.DeleteQuery(model).delete_batch([pk], using)


def _load_unknown(instance: models.Model, using: str, attnames: frozenset[str]) -> None:
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


def _decided_by_database(
    instance: models.Model, shape: _Shape
) -> dict[str, tuple[models.Field, ...]]:
    """The columns whose new value only the database knows after this save, by table:
    generated columns, and fields the save sets to an expression."""
    values = instance.__dict__
    found = None
    for field in shape.settable:
        value = values.get(field.attname)
        if type(value) not in _SHARED and hasattr(value, "resolve_expression"):
            found = found or {table: list(columns) for table, columns in shape.returning.items()}
            table = cast(Any, field.model)._meta.db_table
            found.setdefault(table, []).append(field)
    if found is None:
        return shape.returning
    return {table: tuple(columns) for table, columns in found.items()}


def _generated_reader(
    instance: models.Model, returning: dict[str, tuple[models.Field, ...]], connection: Any
) -> Callable[..., Any]:
    """An execute wrapper that has the instance's ``UPDATE`` return ``returning``'s columns
    and sets them on the instance (PostgreSQL and SQLite have ``RETURNING``)."""
    quote = connection.ops.quote_name
    prefixes = {f"UPDATE {quote(table)} SET ": fields for table, fields in returning.items()}

    def execute(run: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        fields = None if many else next((f for p, f in prefixes.items() if sql.startswith(p)), None)
        if fields is None or not connection.features.can_return_columns_from_insert:
            return run(sql, params, many, context)
        columns = ", ".join(quote(f.column) for f in fields)
        result = run(f"{sql} RETURNING {columns}", params, many, context)
        # Read every row now: SQLite counts the updated rows only once they are read.
        rows = context["cursor"].fetchall()
        if rows:
            for field, value in zip(fields, rows[0], strict=True):
                column = cast(Any, field).cached_col
                converters = connection.ops.get_db_converters(column)
                for convert in (*converters, *column.get_db_converters(connection)):
                    value = convert(value, column, connection)
                instance.__dict__[field.attname] = value
        return result

    return execute


def _guard_from_db(from_db: Callable) -> classmethod:
    """Snapshot what an instance was loaded with (instances built in code need none)."""

    def loaded(cls: type[models.Model], db: str, field_names: Any, values: Any) -> Any:
        instance = from_db(cls, db, field_names, values)
        attnames = _snapshot_attnames(cls)
        if attnames:
            snapshot(instance, attnames)
        return instance

    return classmethod(functools.wraps(from_db)(loaded))


def _guard_refresh(refresh_from_db: Callable) -> Callable:
    """Take a new snapshot of what ``refresh_from_db()`` read from the database."""

    @functools.wraps(refresh_from_db)
    def refreshed(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        result = refresh_from_db(self, *args, **kwargs)
        attnames = _snapshot_attnames(type(self))
        if attnames:
            snapshot(self, attnames)
        return result

    return refreshed


def connect(model: type[models.Model]) -> None:
    """Wire capture for one tracked model (called from ``AppConfig.ready``).

    Its proxies and multi-table children send their own signals: they are wired too, so a
    change to a row of a tracked table is recorded whichever class made it.
    """
    senders = [model, *(m for m in apps.get_models() if m is not model and issubclass(m, model))]
    for sender in senders:
        uid = f"auditq:{sender._meta.label_lower}"
        post_save.connect(_on_save, sender=sender, dispatch_uid=uid, weak=False)
        post_delete.connect(_on_delete, sender=sender, dispatch_uid=uid, weak=False)
    for name in registry.m2m_names(model):
        m2m: Any = model._meta.get_field(name)
        through = m2m.remote_field.through
        m2m_changed.connect(
            _m2m_receiver(m2m),
            sender=through,
            dispatch_uid=f"auditq:m2m:{through._meta.label_lower}",
            weak=False,
        )
    if not getattr(model.save_base, _GUARDED, False):
        setattr(model, "save_base", _guard_save(model.save_base))  # noqa: B010
        setattr(model, "refresh_from_db", _guard_refresh(model.refresh_from_db))  # noqa: B010
        setattr(model, "from_db", _guard_from_db(cast(Any, model.from_db).__func__))  # noqa: B010
    if model.delete is models.Model.delete:
        # The one-statement delete stands in for Django's own delete() only: a delete()
        # of the model's or of a base class (a soft delete, a permission check, a file
        # removed after super().delete()) runs as written, and its changes are captured
        # by the signals like any other.
        setattr(model, "delete", _guard_delete(model.delete))  # noqa: B010
