"""Django's signals -> changes, asked of each consumer and held for the commit."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from django.db import connections, models

from auditq import registry
from auditq.capture.diff import diff, diff_fields, every_value, saved_fields
from auditq.capture.shape import tracked_parents
from auditq.capture.snapshot import loaded_values, saved
from auditq.stream import context, outbox
from auditq.stream.encoding import encode
from auditq.stream.events import REPR_LIMIT, Change

logger = logging.getLogger("auditq")

EMPTY: Mapping[str, Any] = MappingProxyType({})


WRITES: dict[int, outbox.Write] = {}
"""The lone saves in flight (PostgreSQL), by ``id()`` of the instance: ``post_save`` finds
there, without a connection lookup, that the save's own statement carried its change."""


class _QueryRefused(Exception):
    """A ``__str__`` tried to query while auditq took the repr."""


def _refuse(*args: Any) -> Any:
    raise _QueryRefused


def object_repr(
    instance: models.Model, connection: Any, text: Callable[[Any], str] = str
) -> str | None:
    """``str(instance)`` if it needs no query, else ``None`` (the worker takes it then).

    A ``__str__`` that follows a relation not loaded yet would cost the request a
    ``SELECT``: the connection refuses any statement while the repr is taken.
    """
    wrappers = connection.execute_wrappers
    log = connection.queries_log
    logged = len(log)
    wrappers.append(_refuse)
    try:
        return text(instance)[:REPR_LIMIT]
    except Exception:
        # Django's debug cursor logs a statement even when it never ran: the refused
        # one must not count in assertNumQueries or the Debug Toolbar.
        while len(log) > logged:
            log.pop()
        return None
    finally:
        wrappers.remove(_refuse)


def ask_consumers(
    tracking: registry.Tracking,
    instance: models.Model | None,
    pk: Any,
    describe: Callable[[], str | None] | None,
    action: str,
    changes: dict[str, Any],
    current: context.AuditContext | None = None,
) -> Change | None:
    """Ask the model's consumers what they want of this change; ``None`` if nothing.

    ``describe()`` gives the object's repr, taken only for a change someone wants.
    ``current`` is the context in force (looked up if not given).
    """
    if current is None:
        current = context.current()
    wanted = _wanted(tracking, instance, pk, action, changes, current)
    if not wanted:
        return None
    repr_ = None if describe is None else describe()
    return Change(tracking.label, pk, repr_, action, changes, time.time(), current, wanted)


def _wanted(
    tracking: registry.Tracking,
    instance: models.Model | None,
    pk: Any,
    action: str,
    changes: dict[str, Any],
    current: context.AuditContext,
) -> dict[str, Any]:
    """``{consumer name: what it wants}`` of this change, for the consumers that want it."""
    loaded = EMPTY if instance is None else loaded_values(instance)
    wanted = {}
    for consumer in tracking.consumers:
        try:
            data = consumer.capture(tracking.model, instance, action, changes, current, loaded)
        except Exception:
            # Never the user's save: the change goes on for the other consumers, and this
            # consumer's part of it is lost, loudly (a counter: auditq_recount repairs it).
            logger.exception(
                "auditq: the %s consumer could not capture the %s of %s %r; the change is "
                "recorded without it",
                consumer.name,
                action,
                tracking.label,
                pk,
            )
            continue
        if data is not None:
            wanted[consumer.name] = data
    return wanted


def on_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool,
    using: str,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    write = WRITES.get(id(instance))
    if write is not None and write.instance is instance and write.recorded:
        # The save's own statement carried its change (a lone save on PostgreSQL).
        saved(sender, instance, created, update_fields)
        return
    if not raw:
        capture_save(sender, instance, created, connections[using], update_fields)
        saved(sender, instance, created, update_fields)


def capture_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    connection: Any,
    update_fields: frozenset[str] | None,
) -> None:
    """Hold the change a save made (and its tracked ancestors' share) for the commit."""
    tracking = registry.tracking(sender)
    parents = tracked_parents(sender)
    if tracking is None and not parents:
        return
    action = "create" if created else "update"
    if tracking is not None:
        if created:
            changes = every_value(tracking, instance, deleted=False)
        else:
            changes = diff(tracking, instance, update_fields)
        describe = functools.partial(object_repr, instance, connection)
        change = ask_consumers(tracking, instance, encode(instance.pk), describe, action, changes)
        if change is not None:
            outbox.add(connection, change)
    for parent, found in parents:
        # The parent's trail: its own fields, under its own key and text.
        if created:
            changes = every_value(found, instance, deleted=False)
        else:
            changes = diff(found, instance, update_fields)
        key = encode(getattr(instance, parent._meta.pk.attname))
        describe = functools.partial(object_repr, instance, connection, parent.__str__)
        change = ask_consumers(found, instance, key, describe, action, changes)
        if change is not None:
            outbox.add(connection, change)


def capture_many(
    sender: type[models.Model],
    instances: list[models.Model],
    created: bool,
    connection: Any,
    update_fields: frozenset[str] | None,
    then: Callable[[models.Model], None] | None = None,
    *,
    distinct: bool = False,
) -> None:
    """Hold the changes of many rows written by one bulk call (``update()``,
    ``bulk_create()``, ``bulk_update()``), as :func:`capture_save` would one by one: the
    same changes, held as one marker. ``then(instance)`` runs after each row's capture
    (a new snapshot, before the next row: the same object may come twice). ``distinct``:
    each row comes once (one statement's rows), so a transaction of this call alone has
    nothing to squash."""
    tracking = registry.tracking(sender)
    if tracking is None or tracked_parents(sender):
        for instance in instances:
            capture_save(sender, instance, created, connection, update_fields)
            if then is not None:
                then(instance)
        return
    current = context.current()
    action = "create" if created else "update"
    label = tracking.label
    fields = saved_fields(tracking, sender, update_fields)
    at = time.time()  # one statement: one moment
    found = []
    # The reprs are taken with statements refused once for all rows (see object_repr).
    wrappers = connection.execute_wrappers
    log = connection.queries_log
    wrappers.append(_refuse)
    try:
        for instance in instances:
            if created:
                changes = every_value(tracking, instance, deleted=False)
            else:
                changes = diff_fields(fields, instance)
            key = encode(instance.pk)
            wanted = _wanted(tracking, instance, key, action, changes, current)
            if wanted:
                repr_ = _repr_refused(instance, log)
                found.append(Change(label, key, repr_, action, changes, at, current, wanted))
            if then is not None:
                then(instance)
    finally:
        wrappers.remove(_refuse)
    if found:
        outbox.add_many(connection, found, distinct=distinct)


def _repr_refused(instance: models.Model, log: Any) -> str | None:
    """``str(instance)`` while statements are refused (:func:`object_repr`'s inside)."""
    logged = len(log)
    try:
        return str(instance)[:REPR_LIMIT]
    except Exception:
        while len(log) > logged:
            log.pop()
        return None


def on_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    tracking = registry.tracking(sender)
    if tracking is None:
        return
    connection = connections[using]
    change = delete_change(tracking, instance, connection)
    if change is not None:
        outbox.add(connection, change)


def delete_change(
    tracking: registry.Tracking, instance: models.Model, connection: Any
) -> Change | None:
    changes = every_value(tracking, instance, deleted=True)
    describe = functools.partial(object_repr, instance, connection)
    return ask_consumers(tracking, instance, encode(instance.pk), describe, "delete", changes)
