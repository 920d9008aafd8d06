"""Putting a change back (``entry.revert()``): the old values of an ``update`` applied as a
new, audited change; a deleted row restored from its ``delete`` entry where the trail holds
every value it needs. Nothing is applied over a later change: that is a conflict.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, models, router, transaction

from auditq import registry
from auditq.errors import RevertConflict
from auditq.stream.context import audit_context
from auditq.stream.encoding import Unknown, decode
from auditq.stream.events import m2m_keys

if TYPE_CHECKING:
    from auditq.models import AuditEntry


def revert(entry: AuditEntry) -> models.Model:
    """Apply ``entry``'s old values as a new change (``context["reverted"]`` names the
    entry); return the object.

    Raises:
        RevertConflict: a field changed since the entry, a value the trail does not hold
            (masked, a repr) is needed, or the row cannot be restored.
        ValueError: the entry is a create (delete the object instead), or its model is gone.
    """
    model = entry.content_type.model_class()
    if model is None:
        raise ValueError(f"{entry}: its model no longer exists.")
    if entry.action == "create":
        raise ValueError(f"{entry} is a create: deleting the object undoes it.")
    using = router.db_for_write(model)
    key = object_key(model, entry.object_pk)
    with transaction.atomic(using=using), audit_context(reverted=entry.pk):
        if entry.action == "delete":
            return _restore(model, entry, key, using)
        return _update(model, entry, key, using)


def _update(model: Any, entry: AuditEntry, key: Any, using: str) -> models.Model:
    obj = model._base_manager.using(using).select_for_update().filter(pk=key).first()
    if obj is None:
        raise RevertConflict(entry, [], "the object has been deleted since")
    masked = _masked(model)
    conflicts, names, relations = [], [], []
    for name, change in entry.changes.items():
        field = _field(model, name)
        if field is None:
            continue  # gone from the model: nothing to put back
        if name in masked:
            conflicts.append(name)  # its old value was never kept
            continue
        keys = m2m_keys(change)
        if keys is not None:
            removed, added = ({field.target_field.to_python(k) for k in side} for side in keys)
            now = set(getattr(obj, name).values_list("pk", flat=True))
            if not added <= now or removed & now:
                conflicts.append(name)
            relations.append((name, removed, added))
            continue
        try:
            old, new = decode(field, change[0]), decode(field, change[1])
        except Unknown:
            conflicts.append(name)
            continue
        if getattr(obj, field.attname) != new:
            conflicts.append(name)
        setattr(obj, field.attname, old)
        names.append(name)
    if conflicts:
        raise RevertConflict(entry, conflicts, "changed since the entry, or not kept")
    if names:
        obj.save(using=using, update_fields=names)
    for name, removed, added in relations:
        manager = getattr(obj, name)
        manager.remove(*added)
        manager.add(*removed)
    return obj


def _restore(model: Any, entry: AuditEntry, key: Any, using: str) -> models.Model:
    if model._base_manager.using(using).filter(pk=key).exists():
        raise RevertConflict(entry, [], "a row with that key exists again")
    masked = _masked(model)
    values, missing = {}, []
    for field in model._meta.concrete_fields:
        if field.name not in entry.changes or field.name in masked:
            if not (field.null or field.has_default() or field.primary_key):
                missing.append(field.name)
            continue
        try:
            values[field.attname] = decode(field, entry.changes[field.name][0])
        except Unknown:
            missing.append(field.name)
    if missing:
        raise RevertConflict(entry, missing, "their values were never kept")
    obj = model(**values)
    try:
        with transaction.atomic(using=using):
            obj.save(using=using, force_insert=True)
    except IntegrityError as exc:  # a row it pointed at is gone, say
        raise RevertConflict(entry, [], f"the database refused the row ({exc})") from exc
    return obj


def object_key(model: Any, text: str) -> Any:
    """The primary key value of ``model`` that an entry's ``object_pk`` text names."""
    if text.startswith("["):  # a composite key, as key_text() writes it
        fields = model._meta.pk_fields
        return tuple(f.to_python(v) for f, v in zip(fields, json.loads(text), strict=True))
    return model._meta.pk.to_python(text)


class Absent:
    """A value the revert preview cannot show: its text says why."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


NOT_KEPT = Absent("not kept (masked, or recorded as text only)")
DELETED = Absent("(deleted)")
MASKED = Absent("masked")


def preview(entry: AuditEntry) -> list[tuple[str, Any, Any]]:
    """``(field, current value, value after the revert)`` for each field ``revert()``
    would write, read without writing or locking anything: the confirmation page's table.
    Many-to-many values are sets of keys; a masked field is :data:`MASKED` on both sides,
    a value the trail does not hold :data:`NOT_KEPT`, an object deleted since
    :data:`DELETED`."""
    model = entry.content_type.model_class()
    if model is None or entry.action == "create":
        return []
    using = router.db_for_read(model)
    obj = model._base_manager.using(using).filter(pk=object_key(model, entry.object_pk)).first()
    masked = _masked(model)
    rows: list[tuple[str, Any, Any]] = []
    for name, change in entry.changes.items():
        field = _field(model, name)
        if field is None:
            continue
        keys = m2m_keys(change)
        if keys is not None:
            current: Any = (
                DELETED if obj is None else set(getattr(obj, name).values_list("pk", flat=True))
            )
            removed, added = ({field.target_field.to_python(k) for k in side} for side in keys)
            base = current if isinstance(current, set) else set()
            rows.append((name, current, (base - added) | removed))
            continue
        current = DELETED if obj is None else getattr(obj, field.attname)
        if name in masked:  # never shown, now or then
            rows.append((name, MASKED, MASKED))
            continue
        try:
            after = decode(field, change[0])
        except Unknown:
            after = NOT_KEPT
        rows.append((name, current, after))
    return rows


def _field(model: Any, name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except Exception:
        return None


def _masked(model: Any) -> set[str]:
    tracking = registry.tracking(model)
    return {field.name for field in tracking.masked} if tracking else set()
