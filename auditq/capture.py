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
path, as an untracked model's delete would; the rest go through Django's collector.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, cast

from django.db import connections, models, router, transaction
from django.db.models import sql
from django.db.models.deletion import DO_NOTHING, get_candidate_relations_to_delete
from django.db.models.fields.files import FieldFile
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from auditq import context, outbox, registry
from auditq.encoding import MASK, encode
from auditq.events import PK_SLOT, Change

LOADED = "_auditq_loaded"
"""Instance attribute holding ``{attname: value}`` as last read from or written to the DB."""
REPR_LIMIT = 200
_MISSING: Any = object()
_CLEARING = "_auditq_clearing"
_GUARDED = "__auditq_guard__"


def _copy(value: Any) -> Any:
    # Mutable values: a snapshot sharing them would miss in-place edits. JSON and arrays
    # are copied (their dicts and lists, four times faster than deepcopy); a file is
    # remembered by its name (FieldFile compares equal to it).
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    if isinstance(value, FieldFile):
        return value.name
    return value


def snapshot(instance: models.Model, attnames: Iterable[str]) -> None:
    """Remember the current values of ``attnames`` as the database's."""
    values = instance.__dict__
    loaded = values.setdefault(LOADED, {})
    for attname in attnames:
        if attname in values:
            loaded[attname] = _copy(values[attname])


def _object_repr(instance: models.Model) -> str | None:
    try:
        return str(instance)[:REPR_LIMIT]
    except Exception:
        return None


def _changed(old: Any, new: Any) -> tuple[Any, Any] | None:
    try:
        if old == new:
            return None
    except Exception:
        pass
    old, new = encode(old), encode(new)
    return None if old == new else (old, new)


def diff(
    tracking: registry.Tracking,
    instance: models.Model,
    update_fields: Iterable[str] | None = None,
) -> dict[str, list[Any]]:
    """Return ``{name: [old, new]}`` for the tracked fields that differ from the snapshot."""
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    saved = None if update_fields is None else frozenset(update_fields)
    changes = {}
    for field in tracking.fields:
        if saved is not None and not (field.name in saved or field.attname in saved):
            continue
        new = values.get(field.attname, _MISSING)
        old = loaded.get(field.attname, _MISSING)
        if new is _MISSING or old is _MISSING:
            continue
        pair = _changed(old, new)
        if pair is not None:
            changes[field.name] = [MASK, MASK] if field.masked else list(pair)
    return changes


def _every_value(
    tracking: registry.Tracking, instance: models.Model, *, deleted: bool
) -> dict[str, list]:
    """``{name: [None, value]}`` for a create, ``{name: [last value, None]}`` for a delete."""
    values = instance.__dict__
    loaded = values.get(LOADED, {}) if deleted else {}
    changes = {}
    for field in tracking.fields:
        value = loaded.get(field.attname, values.get(field.attname, _MISSING))
        if value is _MISSING:
            continue
        encoded = MASK if field.masked else encode(value)
        changes[field.name] = [encoded, None] if deleted else [None, encoded]
    return changes


def _change(
    tracking: registry.Tracking,
    instance: models.Model | None,
    pk: Any,
    repr_: str | None,
    action: str,
    changes: dict[str, Any],
) -> Change | None:
    """Ask the model's consumers what they want of this change; ``None`` if nothing."""
    current = context.current()
    wanted = {}
    for consumer in tracking.consumers:
        data = consumer.capture(instance, action, changes, current)
        if data is not None:
            wanted[consumer.name] = data
    if not wanted:
        return None
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
    tracking = registry.tracking(sender)
    if raw or tracking is None:
        return
    connection = connections[using]
    write = outbox.state(connection).write
    if write is None or write.instance is not instance or not write.recorded:
        if created:
            changes = _every_value(tracking, instance, deleted=False)
        else:
            changes = diff(tracking, instance, update_fields)
        action = "create" if created else "update"
        change = _change(tracking, instance, encode(instance.pk), None, action, changes)
        if change is not None:
            outbox.add(connection, change._replace(repr=_object_repr(instance)))
    if update_fields is None or created:
        snapshot(instance, tracking.attnames)
    else:
        saved = [f for f in tracking.fields if {f.name, f.attname} & update_fields]
        snapshot(instance, [f.attname for f in saved])


def _on_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    tracking = registry.tracking(sender)
    if tracking is None:
        return
    change = _delete_change(tracking, instance)
    if change is not None:
        outbox.add(connections[using], change)


def _delete_change(tracking: registry.Tracking, instance: models.Model) -> Change | None:
    changes = _every_value(tracking, instance, deleted=True)
    change = _change(tracking, instance, encode(instance.pk), None, "delete", changes)
    return change and change._replace(repr=_object_repr(instance))


def _m2m_receiver(model: type[models.Model], field: Any) -> Callable[..., None]:
    through: Any = field.remote_field.through
    source = through._meta.get_field(field.m2m_field_name()).attname
    target = through._meta.get_field(field.m2m_reverse_field_name()).attname

    def receiver(
        sender: Any,
        instance: models.Model,
        action: str,
        reverse: bool,
        pk_set: Any,
        using: str,
        **kwargs: Any,
    ) -> None:
        if (reverse and kwargs["model"] is not model) or (
            not reverse and not isinstance(instance, model)
        ):
            return
        if action == "pre_clear":
            # clear() sends no keys: read them now, the only query auditq adds to a request.
            if reverse:
                rows = through._base_manager.using(using).filter(**{target: instance.pk})
                keys = set(rows.values_list(source, flat=True))
            else:
                rows = through._base_manager.using(using).filter(**{source: instance.pk})
                keys = set(rows.values_list(target, flat=True))
            instance.__dict__.setdefault(_CLEARING, {})[field.name] = keys
            return
        if action == "post_clear":
            pk_set = instance.__dict__.get(_CLEARING, {}).pop(field.name, set())
            kind = "removed"
        elif action in ("post_add", "post_remove"):
            kind = "added" if action == "post_add" else "removed"
        else:
            return
        if not pk_set:
            return
        tracking = registry.tracking(model)
        if tracking is None:
            return
        connection = connections[using]
        if reverse:
            for pk in encode(pk_set):
                changes = {field.name: {"added": [], "removed": [], kind: [encode(instance.pk)]}}
                change = _change(tracking, None, pk, None, "update", changes)
                if change is not None:
                    outbox.add(connection, change)
        else:
            changes = {field.name: {"added": [], "removed": [], kind: encode(set(pk_set))}}
            change = _change(tracking, instance, encode(instance.pk), None, "update", changes)
            if change is not None:
                outbox.add(connection, change._replace(repr=_object_repr(instance)))

    return receiver


# --------------------------------------------------------------------------- the one-statement path


def _statement_prefixes(model: type[models.Model], using: str) -> tuple[str, str, str]:
    table = connections[using].ops.quote_name(model._meta.db_table)
    return (f"INSERT INTO {table} ", f"UPDATE {table} SET ", f"DELETE FROM {table} WHERE ")


def _save_statement_change(
    tracking: registry.Tracking, instance: models.Model, update_fields: Any
) -> Callable[[str], Change | None]:
    """Build the change of a save from its statement (``I``nsert or ``U``pdate)."""

    def build(verb: str) -> Change | None:
        if verb == "U":
            changes = diff(tracking, instance, update_fields)
            change = _change(tracking, instance, encode(instance.pk), None, "update", changes)
            return change and change._replace(repr=_object_repr(instance))
        if instance.pk is not None:
            changes = _every_value(tracking, instance, deleted=False)
            change = _change(tracking, instance, encode(instance.pk), None, "create", changes)
            return change and change._replace(repr=_object_repr(instance))
        # The database assigns the key in this statement: write a slot where it goes
        # (in the changes and in the repr, if the repr shows it); the SQL fills it in.
        attname = instance._meta.pk.attname
        instance.__dict__[attname] = PK_SLOT
        try:
            changes = _every_value(tracking, instance, deleted=False)
            repr_ = _object_repr(instance)
        finally:
            instance.__dict__[attname] = None
        change = _change(tracking, instance, PK_SLOT, None, "create", changes)
        return change and change._replace(repr=repr_)

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
        if tracking is None or kwargs.get("raw", args[0] if args else False):
            return save_base(self, *args, **kwargs)
        using = kwargs.get("using") or router.db_for_write(model, instance=self)
        _load_unknown(self, using, tracking)
        connection = connections[using]
        if connection.in_atomic_block or not connection.get_autocommit():
            return save_base(self, *args, **kwargs)
        if not outbox.single_statement(connection) or model._meta.parents:
            with transaction.atomic(using=using, savepoint=False):
                return save_base(self, *args, **kwargs)
        found = outbox.state(connection)
        previous = found.write
        write = found.write = outbox.Write(
            self,
            _statement_prefixes(model, using)[:2],
            _save_statement_change(tracking, self, kwargs.get("update_fields")),
        )
        try:
            result = save_base(self, *args, **kwargs)
        finally:
            found.write = previous
        if write.recorded:
            outbox.committed(connection)
        return result

    setattr(guarded, _GUARDED, True)
    return guarded


@functools.cache
def _deletes_alone(model: type[models.Model]) -> bool:
    """Whether Django would delete ``model``'s rows one statement at a time, were it not
    for auditq's own ``post_delete`` receiver (the collector's fast path)."""
    meta = model._meta
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
        change = _delete_change(tracking, self)
        if change is None:
            count = _delete_row(model, self.pk, using)
        elif outbox.single_statement(connection):
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
            alone = not connection.in_atomic_block and connection.get_autocommit()
            with transaction.atomic(using=using, savepoint=False) if alone else nullcontext():
                count = _delete_row(model, self.pk, using)
                if count:
                    outbox.add(connection, change)
        setattr(self, model._meta.pk.attname, None)
        return count, {model._meta.label: count}

    setattr(guarded, _GUARDED, True)
    return guarded


def _delete_row(model: type[models.Model], pk: Any, using: str) -> int:
    with transaction.mark_for_rollback_on_error(using):
        return sql.DeleteQuery(model).delete_batch([pk], using)


def _load_unknown(instance: models.Model, using: str, tracking: registry.Tracking) -> None:
    """Read the old values of fields that were deferred at load and have been set since.

    The only case where auditq reads before a save: the instance never had those values.
    """
    if instance._state.adding or instance.pk is None:
        return
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    unknown = [a for a in tracking.attnames if a in values and a not in loaded]
    if unknown:
        model = type(instance)
        row = model._base_manager.using(using).filter(pk=instance.pk).values(*unknown).first()
        loaded.update(row or {})


def _guard_from_db(from_db: Callable) -> classmethod:
    """Snapshot what an instance was loaded with (instances built in code need none)."""

    def loaded(cls: type[models.Model], db: str, field_names: Any, values: Any) -> Any:
        instance = from_db(cls, db, field_names, values)
        tracking = registry.tracking(cls)
        if tracking is not None:
            snapshot(instance, tracking.attnames)
        return instance

    setattr(loaded, _GUARDED, True)
    return classmethod(functools.wraps(from_db)(loaded))


def _guard_refresh(refresh_from_db: Callable) -> Callable:
    """Take a new snapshot of what ``refresh_from_db()`` read from the database."""

    @functools.wraps(refresh_from_db)
    def refreshed(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        result = refresh_from_db(self, *args, **kwargs)
        tracking = registry.tracking(type(self))
        if tracking is not None:
            snapshot(self, tracking.attnames)
        return result

    return refreshed


def connect(model: type[models.Model]) -> None:
    """Wire capture for one tracked model (called from ``AppConfig.ready``)."""
    uid = f"auditq:{model._meta.label_lower}"
    post_save.connect(_on_save, sender=model, dispatch_uid=uid, weak=False)
    post_delete.connect(_on_delete, sender=model, dispatch_uid=uid, weak=False)
    for name in registry.m2m_names(model):
        m2m: Any = model._meta.get_field(name)
        m2m_changed.connect(
            _m2m_receiver(model, m2m),
            sender=m2m.remote_field.through,
            dispatch_uid=f"{uid}.{name}",
            weak=False,
        )
    if not getattr(model.save_base, _GUARDED, False):
        setattr(model, "save_base", _guard_save(model.save_base))  # noqa: B010
        setattr(model, "delete", _guard_delete(model.delete))  # noqa: B010
        setattr(model, "refresh_from_db", _guard_refresh(model.refresh_from_db))  # noqa: B010
        setattr(model, "from_db", _guard_from_db(cast(Any, model.from_db).__func__))  # noqa: B010
