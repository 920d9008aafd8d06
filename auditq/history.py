"""Reading the trail (``AuditEntry.objects``): an object's entries, its audited values at
a moment (``as_of``) and one field's history (``field_history``).

A value the trail does not hold is left out rather than guessed: a masked field, a value
kept only as its repr, a field the model no longer has. A trail that does not reach back
to the object's creation (pruned, or written only since auditing began) raises
:class:`HistoryIncomplete` instead of answering wrong.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.utils import timezone

from auditq import registry
from auditq.errors import HistoryIncomplete
from auditq.stream.encoding import MASK, Unknown, decode, encode
from auditq.stream.events import key_text, m2m_keys


class Entry(Protocol):
    """What time travel reads of an ``AuditEntry``."""

    action: str
    changes: dict[str, Any]
    occurred_at: datetime.datetime
    actor_repr: str


class FieldChange(NamedTuple):
    """One change of one field, as ``field_history()`` lists them."""

    occurred_at: datetime.datetime
    actor_repr: str
    old: Any
    """The value before (``None`` for a create); for a many-to-many field, the keys
    removed."""
    new: Any
    """The value after (``None`` for a delete); for a many-to-many field, the keys added."""


def state_at(
    model: type[models.Model], entries: Sequence[Entry], when: datetime.datetime
) -> dict[str, Any] | None:
    """The audited values of the object whose ``entries`` (oldest first) are given, at
    ``when``; ``None`` if it did not exist then. Many-to-many fields are sets of keys."""
    earlier = [entry for entry in entries if entry.occurred_at <= when]
    if not earlier:
        if entries and entries[0].action != "create":
            raise HistoryIncomplete(_incomplete(model))
        return None
    state: dict[str, Any] | None = None
    for entry in earlier:
        if entry.action == "create":
            state = {}
        elif entry.action == "delete":
            state = None
            continue
        elif state is None:  # an update with no create before it: history is missing
            raise HistoryIncomplete(_incomplete(model))
        for name, change in entry.changes.items():
            keys = m2m_keys(change)
            if keys is None:
                state[name] = change[1]
            else:
                removed, added = keys
                state[name] = (set(state.get(name, ())) - set(removed)) | set(added)
    return None if state is None else _decoded(model, state)


def field_changes(
    model: type[models.Model], entries: Sequence[Entry], name: str
) -> list[FieldChange]:
    """Every change of the field ``name`` in ``entries`` (oldest first), decoded.

    Raises:
        ValueError: the model has no such field, or it is masked (its values are not kept).
    """
    field = _field(model, name)
    if field is None:
        raise ValueError(f"{model._meta.label} has no field {name!r}.")
    if name in _masked(model):
        raise ValueError(f"{model._meta.label}.{name} is masked: the trail keeps no values.")
    found = []
    for entry in entries:
        if name not in entry.changes:
            continue
        change = entry.changes[name]
        keys = m2m_keys(change)
        if keys is not None:
            old, new = (_keys(field, side) for side in keys)
        else:
            old, new = (_value(field, side) for side in change)
        found.append(FieldChange(entry.occurred_at, entry.actor_repr, old, new))
    return found


def _decoded(model: type[models.Model], state: dict[str, Any]) -> dict[str, Any]:
    masked = _masked(model)
    values = {}
    for name, value in state.items():
        field = _field(model, name)
        if field is None or (name in masked and value == MASK):
            continue  # gone from the model, or never kept
        try:
            values[name] = _keys(field, value) if isinstance(value, set) else decode(field, value)
        except Unknown:
            continue
    return values


def _value(field: Any, value: Any) -> Any:
    try:
        return decode(field, value)
    except Unknown:
        return value  # the {"repr": ..., "unencodable": true} the trail kept


def _keys(field: Any, keys: Any) -> Any:
    target = field.target_field
    return {target.to_python(key) for key in keys}


def _field(model: type[models.Model], name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


def _masked(model: type[models.Model]) -> set[str]:
    tracking = registry.tracking(model)
    return {field.name for field in tracking.masked} if tracking else set()


def _incomplete(model: type[models.Model]) -> str:
    return (
        f"the trail of this {model._meta.label} does not reach back to its creation "
        "(pruned, or recorded only since auditing began): its values then are unknown."
    )


def _aware(when: datetime.datetime) -> datetime.datetime:
    if not isinstance(when, datetime.datetime):
        raise ValueError(f"when= takes a datetime, not {when!r}.")
    if settings.USE_TZ and timezone.is_naive(when):
        raise ValueError(f"when= takes an aware datetime (USE_TZ is on), not {when!r}.")
    return when


class AuditEntryQuerySet(models.QuerySet):
    """Reading the trail."""

    def for_object(self, obj: models.Model) -> AuditEntryQuerySet:
        """Return the entries of one object, oldest first.

        Example:
            >>> AuditEntry.objects.for_object(donation)
        """
        key = encode(obj.pk)
        if key is None or (isinstance(key, list) and None in key):
            raise ValueError(f"for_object() needs a saved object; {obj!r} has no primary key.")
        return self.for_model(type(obj)).filter(object_pk=key_text(key))

    def for_model(self, model: type[models.Model] | models.Model) -> AuditEntryQuerySet:
        """Return the entries of every object of ``model``, oldest first."""
        if not hasattr(model, "_meta"):
            raise ValueError(f"for_model() takes a model class, not {model!r}.")
        # A proxy's changes are its concrete model's: recorded, and found, under that.
        content_type = ContentType.objects.db_manager(self.db).get_for_model(model)
        return self.filter(content_type=content_type).order_by("occurred_at", "id")

    def as_of(self, obj: Any, when: datetime.datetime) -> dict[str, Any] | None:
        """The audited values of ``obj`` (an instance, or ``(Model, pk)``) at ``when``, as
        Python values (many-to-many: sets of keys); ``None`` if it did not exist then.
        Masked fields, values kept only as a repr and fields the model no longer has
        are left out.

        Raises:
            auditq.HistoryIncomplete: the trail does not reach back to its creation.

        Example:
            >>> AuditEntry.objects.as_of(donation, timezone.now() - timedelta(days=7))
        """
        model, entries = self._trail(obj)
        return state_at(model, entries, _aware(when))

    def field_history(self, obj: Any, name: str) -> list[FieldChange]:
        """Every change of the field ``name`` of ``obj`` (an instance, or ``(Model,
        pk)``), oldest first: ``(occurred_at, actor_repr, old, new)`` tuples.

        Raises:
            ValueError: no such field, or a masked one (its values are not kept).
        """
        model, entries = self._trail(obj)
        return field_changes(model, entries, name)

    def _trail(self, obj: Any) -> tuple[Any, list[Any]]:
        if isinstance(obj, tuple) and len(obj) == 2 and hasattr(obj[0], "_meta"):
            model, pk = obj
            entries = self.for_model(model).filter(object_pk=key_text(encode(pk)))
        elif isinstance(obj, models.Model):
            model, entries = type(obj), self.for_object(obj)
        else:
            raise ValueError(f"Give a model instance or (Model, pk), not {obj!r}.")
        return model, list(entries.only("action", "changes", "occurred_at", "actor_repr"))
