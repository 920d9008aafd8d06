"""Turn saves, deletes and many-to-many changes into events, in memory, with no query.

Old values come from a snapshot taken when the instance is loaded (``post_init``) and
refreshed after every save, so an update of a loaded instance issues no ``SELECT``. The
events are handed to :mod:`auditq.delivery`, which writes them at commit.
"""

from __future__ import annotations

import copy
import functools
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connections, models, router, transaction
from django.db.models.fields.files import FieldFile
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save

from auditq import context, delivery, registry
from auditq.encoding import MASK, encode

LOADED = "_auditq_loaded"
"""Instance attribute holding ``{attname: value}`` as last read from or written to the DB."""
REPR_LIMIT = 200
_MISSING: Any = object()
_CLEARING = "_auditq_clearing"


def _copy(value: Any) -> Any:
    # Mutable values: a snapshot sharing them would miss in-place edits. JSON and arrays
    # are copied; a file is remembered by its name (FieldFile compares equal to it).
    kind = type(value)
    if kind is dict or kind is list:
        return copy.deepcopy(value)
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


def _event(
    tracking: registry.Tracking, pk: Any, repr_: str | None, action: str, changes: dict
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "model": tracking.label,
        "pk": encode(pk),
        "repr": repr_,
        "action": action,
        "changes": changes,
        "at": time.time(),
    }


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
    update_fields: frozenset[str] | None = None,
) -> dict[str, list[Any]]:
    """Return ``{name: [old, new]}`` for the tracked fields that differ from the snapshot."""
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    changes = {}
    for field in tracking.fields:
        if update_fields is not None and not (
            field.name in update_fields or field.attname in update_fields
        ):
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


def _on_init(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    snapshot(instance, registry.tracking(sender).attnames)


def _on_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool,
    using: str,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    if raw:
        return
    tracking = registry.tracking(sender)
    current = context.current()
    if current.enabled:
        if created:
            changes = _every_value(tracking, instance, deleted=False)
        else:
            changes = diff(tracking, instance, update_fields)
        if changes:
            action = "create" if created else "update"
            event = _event(tracking, instance.pk, _object_repr(instance), action, changes)
            delivery.enqueue(using, event, current)
    if update_fields is None or created:
        snapshot(instance, tracking.attnames)
    else:
        saved = [f for f in tracking.fields if {f.name, f.attname} & update_fields]
        snapshot(instance, [f.attname for f in saved])


def _on_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    current = context.current()
    if not current.enabled:
        return
    tracking = registry.tracking(sender)
    changes = _every_value(tracking, instance, deleted=True)
    event = _event(tracking, instance.pk, _object_repr(instance), "delete", changes)
    delivery.enqueue(using, event, current)


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
        current = context.current()
        if not current.enabled or (reverse and kwargs["model"] is not model):
            return
        if not reverse and not isinstance(instance, model):
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
        if reverse:
            for pk in encode(pk_set):
                change = {"added": [], "removed": [], kind: [encode(instance.pk)]}
                event = _event(tracking, pk, None, "update", {field.name: change})
                delivery.enqueue(using, event, current)
        else:
            change = {"added": [], "removed": [], kind: encode(set(pk_set))}
            event = _event(
                tracking, instance.pk, _object_repr(instance), "update", {field.name: change}
            )
            delivery.enqueue(using, event, current)

    return receiver


def _guard_save(save_base: Callable) -> Callable:
    """Run an audited save outside a transaction inside one, with its outbox row.

    In autocommit mode a plain ``save()`` commits before ``post_save`` is sent: without
    this the change and its outbox row would commit separately, and a crash between
    them would lose the change.
    """

    @functools.wraps(save_base)
    def guarded(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        _load_unknown(self, using)
        connection = connections[using]
        if connection.in_atomic_block or not connection.get_autocommit():
            return save_base(self, *args, **kwargs)
        with transaction.atomic(using=using, savepoint=False):
            return save_base(self, *args, **kwargs)

    guarded.__auditq_guard__ = True  # type: ignore[attr-defined]
    return guarded


def _load_unknown(instance: models.Model, using: str) -> None:
    """Read the old values of fields that were deferred at load and have been set since.

    The only case where auditq reads before a save: the instance never had those values.
    """
    if instance._state.adding or instance.pk is None:
        return
    model = type(instance)
    if not registry.is_audited(model):
        return
    values = instance.__dict__
    loaded = values.get(LOADED, {})
    unknown = [a for a in registry.tracking(model).attnames if a in values and a not in loaded]
    if unknown:
        row = model._base_manager.using(using).filter(pk=instance.pk).values(*unknown).first()
        loaded.update(row or {})


def _guard_refresh(refresh_from_db: Callable) -> Callable:
    """Take a new snapshot of what ``refresh_from_db()`` read from the database."""

    @functools.wraps(refresh_from_db)
    def refreshed(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        result = refresh_from_db(self, *args, **kwargs)
        model = type(self)
        if registry.is_audited(model):
            snapshot(self, registry.tracking(model).attnames)
        return result

    return refreshed


def connect(model: type[models.Model]) -> None:
    """Wire capture for one audited model (called from ``AppConfig.ready``)."""
    uid = f"auditq:{model._meta.label_lower}"
    post_init.connect(_on_init, sender=model, dispatch_uid=uid, weak=False)
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
    if not getattr(model.save_base, "__auditq_guard__", False):
        setattr(model, "save_base", _guard_save(model.save_base))  # noqa: B010
        setattr(model, "refresh_from_db", _guard_refresh(model.refresh_from_db))  # noqa: B010
