"""The one shape of a change as it travels: request path -> outbox row -> consumers.

The request path builds :class:`Change` records; :func:`dumps` writes a transaction's as
one JSON payload (versioned), :func:`loads` reads it back as :class:`Event` objects and
refuses other versions. How event ids are drawn: docs/delivery.md."""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import orjson
from django.apps import apps

from auditq import conf
from auditq.stream.context import AuditContext, resolve_actor
from auditq.stream.encoding import encode, json_bytes, truncated

VERSION = 3
WIDE = "wide"
"""Payload key set when the payload holds an integer beyond 64 bits (read it with the
standard library; orjson would make it a float)."""
"""Bumped whenever the payload changes shape; a worker refuses other versions."""

REPR_LIMIT = 200
"""The longest object text a change carries (``AuditEntry.object_repr`` and
``CallbackRun.object_repr`` hold that much)."""
PK_SLOT = "@auditq:pk@"
"""Stands for a primary key the database has not assigned yet: the statement that assigns
it stores the key as text beside the payload (the outbox row's ``key``), and :func:`loads`
puts it where the slot is (the key, the key field's new value, the repr)."""


def m2m_change(*, added: Sequence[Any] = (), removed: Sequence[Any] = ()) -> dict[str, list[Any]]:
    """The value of a many-to-many field in ``changes``: the keys added and removed."""
    return {"added": list(added), "removed": list(removed)}


def m2m_keys(change: Any) -> tuple[list[Any], list[Any]] | None:
    """``(removed, added)`` of a many-to-many field's change; ``None`` for ``[old, new]``."""
    if isinstance(change, dict):
        return change.get("removed", []), change.get("added", [])
    return None


def key_text(pk: Any) -> str:
    """The one text form of a primary key given as JSON data (``Change.pk``, ``Event.pk``):
    what ``AuditEntry.object_pk`` stores, ``for_object()`` looks up and the admin links to.

    A single-column key is its text (``7``, ``2f1c...``); a composite key is its JSON
    array (``[1, -54]``).

    Example:
        >>> key_text([1, "a"])
        '[1, "a"]'
    """
    if isinstance(pk, list):
        return json.dumps(pk, ensure_ascii=False)
    return str(pk)


class PayloadError(ValueError):
    """An outbox payload this version of auditq cannot read."""


class OtherVersion(PayloadError):
    """A payload of another version: a worker of that version may read it (a deploy in
    progress), so it is put back rather than set aside."""


ACTIONS = frozenset({"create", "update", "delete"})
_known_models: set[str] = set()


class Change(NamedTuple):
    """One captured change, in memory on the request path.

    A named tuple rather than a dataclass: one is built per save, and a tuple is built
    three times faster and is written to JSON as a compact array.
    """

    model: str
    """``app_label.modelname`` of the changed object."""
    pk: Any
    """The object's primary key, JSON-safe (:data:`PK_SLOT` until the database assigns it)."""
    repr: str | None
    """``str(obj)`` at change time; ``None`` lets the worker look it up."""
    action: str
    """``"create"``, ``"update"`` or ``"delete"``."""
    changes: dict[str, Any]
    """``{field: [old, new]}``, masked and JSON-safe; many-to-many ``{"added", "removed"}``."""
    at: float
    """When the change was made (Unix time)."""
    context: AuditContext
    """Who made it, from where and why."""
    consumers: dict[str, Any]
    """What each interested consumer wants from this change, by consumer name."""


@dataclass(frozen=True)
class Event:
    """One change as a consumer receives it in the worker (and a callback as ``event``)."""

    id: uuid.UUID
    """The change's idempotency key (``AuditEntry.event_id`` of an audited change)."""
    model: str
    """``app_label.modelname`` of the changed object."""
    pk: Any
    """The object's primary key, as JSON data."""
    repr: str | None
    """``str(obj)`` at change time, or ``None`` when it was not taken."""
    action: str
    """``"create"``, ``"update"`` or ``"delete"``."""
    changes: Mapping[str, Any]
    """``{field: [old, new]}``, as ``AuditEntry.changes`` stores it (masked values as
    ``"***"``; the event a callback handler gets has them in clear)."""
    occurred_at: datetime.datetime
    """When the change was made on the request path."""
    actor_id: Any
    """The key of the user who made the change, or ``None``."""
    actor_repr: str
    """That user's name at the time, or ``""``."""
    remote_addr: str | None
    """The client's address, when the change came from a request."""
    request_id: str | None
    """The request's id, shared by every change of that request."""
    context: Mapping[str, Any]
    """The extra keys given to ``audit_context(...)``."""
    consumers: Mapping[str, Any]
    """What each interested consumer wants from this change, by consumer name."""


def _context_row(context: AuditContext) -> dict[str, Any]:
    actor_id, actor_repr = resolve_actor(context.actor)
    return {
        "actor_id": actor_id,
        "actor_repr": actor_repr,
        "remote_addr": context.remote_addr,
        "request_id": context.request_id,
        "extra": dict(context.extra),
    }


def dumps(changes: Sequence[Change]) -> str:
    """Write one transaction's changes as an outbox payload (JSON text); a value longer
    than ``MAX_VALUE_LENGTH`` travels truncated (:func:`encoding.truncated`)."""
    text = _write(changes)
    limit = conf.get().MAX_VALUE_LENGTH
    if len(text) > limit:  # a big payload: many changes, or one huge value
        cut = [_cut(change, limit) for change in changes]
        if any(short is not change for short, change in zip(cut, changes, strict=True)):
            text = _write(cut)
    return text


def _cut(change: Change, limit: int) -> Change:
    """``change`` with each ``[old, new]`` value longer than ``limit`` truncated."""
    try:
        # No value is longer than the JSON of all of them: the common case (a payload long
        # because it holds many changes), decided in one call.
        if len(orjson.dumps(change.changes, default=encode)) <= limit:
            return change
    except orjson.JSONEncodeError:
        pass
    changes, cut = {}, False
    for name, pair in change.changes.items():
        if type(pair) is list and len(pair) == 2:
            short = [truncated(pair[0], limit), truncated(pair[1], limit)]
            if short[0] is not pair[0] or short[1] is not pair[1]:
                pair, cut = short, True
        changes[name] = pair
    return change._replace(changes=changes) if cut else change


def _write(changes: Sequence[Change]) -> str:
    contexts: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    rows = []
    for change in changes:
        key = id(change.context)
        if key not in index:
            index[key] = len(contexts)
            contexts.append(_context_row(change.context))
        rows.append(
            (
                change.model,
                change.pk,
                change.repr,
                change.action,
                change.changes,
                change.at,
                index[key],
                change.consumers,
            )
        )
    payload = {"v": VERSION, "batch": os.urandom(16).hex(), "contexts": contexts, "events": rows}
    try:
        # default=encode: a consumer's data that is not JSON-safe is encoded, not raised.
        return orjson.dumps(payload, default=encode).decode()
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits: orjson writes none and would read it as a float.
        # The flag sends the reader to the standard library, for this payload only.
        payload[WIDE] = True
        return json_bytes(payload).decode()


def _event_id(batch: int, index: int) -> uuid.UUID:
    # The index lands in the low 32 bits, clear of the version and variant bits.
    return uuid.UUID(int=batch ^ index, version=4)


def loads(payload: str, key: str = "") -> list[Event]:
    """Read an outbox payload back into events; ``key`` is the key the database assigned
    to a lone create's row (the outbox row's ``key``), put where the payload has
    :data:`PK_SLOT`.

    Raises:
        OtherVersion: the payload is of another version.
        PayloadError: the text is not JSON, or not a payload of this version's shape
            (a missing key, a wrong type, a model this project does not have).
    """
    try:
        data = orjson.loads(payload)
        if isinstance(data, dict) and data.get(WIDE):
            data = json.loads(payload)
        version = data.get("v") if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the outbox payload is not JSON: {exc}") from exc
    if version != VERSION:
        raise OtherVersion(
            f"the outbox payload has version {version!r}; this auditq reads version {VERSION}. "
            "Deploy the same auditq version to web processes and workers."
        )
    try:
        return _events(data, key)
    except PayloadError:
        raise
    # Whatever a malformed payload makes the reading raise, the row is refused as such.
    except (LookupError, TypeError, ValueError, ArithmeticError, OSError) as exc:
        raise PayloadError(f"the outbox payload is malformed: {type(exc).__name__}: {exc}") from exc


def _events(data: dict[str, Any], key: str) -> list[Event]:
    batch = int(data["batch"], 16)
    contexts = data["contexts"]
    events = []
    for number, (model, pk, repr_, action, changes, at, context, consumers) in enumerate(
        data["events"]
    ):
        _check_shape(model, repr_, action, changes, consumers)
        ctx = contexts[context]
        if type(ctx["extra"]) is not dict:
            raise PayloadError("the outbox payload has a context whose extra is not an object")
        if pk == PK_SLOT and key:
            pk, repr_, changes = _assigned(model, key, repr_, changes)
        events.append(
            Event(
                id=_event_id(batch, number),
                model=model,
                pk=pk,
                repr=repr_,
                action=action,
                changes=changes,
                occurred_at=datetime.datetime.fromtimestamp(at, tz=datetime.UTC),
                actor_id=ctx["actor_id"],
                actor_repr=ctx["actor_repr"],
                remote_addr=ctx["remote_addr"],
                request_id=ctx["request_id"],
                context=ctx["extra"],
                consumers=consumers,
            )
        )
    return events


def _check_shape(model: Any, repr_: Any, action: Any, changes: Any, consumers: Any) -> None:
    """Refuse an event no consumer could record: a model this project lacks (a new
    ``ContentType`` must not appear for it), or fields of the wrong kind."""
    if type(model) is not str or model not in _known_models:
        try:
            apps.get_model(model)
        except (LookupError, TypeError, ValueError, AttributeError):
            raise PayloadError(f"the outbox payload names an unknown model {model!r}") from None
        _known_models.add(model)
    if action not in ACTIONS:
        raise PayloadError(f"the outbox payload has an unknown action {action!r}")
    if not (repr_ is None or type(repr_) is str):
        raise PayloadError(f"the outbox payload has a repr of type {type(repr_).__name__}")
    if type(changes) is not dict or type(consumers) is not dict:
        raise PayloadError("the outbox payload has changes or consumers that are not objects")


def _assigned(
    model: str, key: str, repr_: str | None, changes: dict[str, Any]
) -> tuple[Any, str | None, dict[str, Any]]:
    """The key, repr and changes of a create whose key the database assigned."""
    field = apps.get_model(model)._meta.pk
    assert field is not None  # every concrete model has one
    pk = encode(field.to_python(key))
    if changes.get(field.name) == [None, PK_SLOT]:
        changes = {**changes, field.name: [None, pk]}
    return pk, None if repr_ is None else repr_.replace(PK_SLOT, key), changes


def to_data(event: Event) -> dict[str, Any]:
    """An event as JSON data, to keep beside work done later (a callback's run)."""
    data = {f.name: getattr(event, f.name) for f in fields(Event) if f.name != "consumers"}
    data["id"] = str(event.id)
    data["occurred_at"] = event.occurred_at.isoformat()
    return data


def from_data(data: Mapping[str, Any]) -> Event:
    """The event :func:`to_data` wrote."""
    return Event(
        **{
            **data,
            "id": uuid.UUID(data["id"]),
            "occurred_at": datetime.datetime.fromisoformat(data["occurred_at"]),
            "consumers": {},
        }
    )


def wanted_by(events: Iterable[Event], consumer: str) -> list[Event]:
    """The events that ``consumer`` asked for."""
    return [event for event in events if consumer in event.consumers]
