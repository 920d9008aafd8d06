"""Many-to-many changes -> ``update`` changes of added and removed keys."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import connections, models

from auditq import registry
from auditq.capture.receivers import ask_consumers, object_repr
from auditq.capture.shape import concrete, shape_of
from auditq.stream import outbox
from auditq.stream.encoding import encode
from auditq.stream.events import m2m_change

_CLEARING = "_auditq_clearing"


def _m2m_owners(
    model: type[models.Model], field: Any
) -> list[tuple[type[models.Model], registry.Tracking]]:
    """The tracked models that record ``field`` for an instance of ``model``: the model
    itself and its tracked multi-table ancestors that have the field."""
    found = []
    for owner in (concrete(model), *shape_of(model).parents):
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


def receiver(field: Any) -> Callable[..., None]:
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
                    changes = {field.name: m2m_change(**{kind: [encode(instance.pk)]})}
                    change = ask_consumers(tracking, None, pk, None, "update", changes)
                    if change is not None:
                        outbox.add(connection, change)
            return
        keys = encode(set(pk_set))
        for owner, tracking in owners:
            changes = {field.name: m2m_change(**{kind: keys})}
            key = encode(getattr(instance, owner._meta.pk.attname))
            describe = functools.partial(object_repr, instance, connection, owner.__str__)
            change = ask_consumers(tracking, instance, key, describe, "update", changes)
            if change is not None:
                outbox.add(connection, change)

    return receiver
