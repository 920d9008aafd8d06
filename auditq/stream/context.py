"""Who, where and why a change was made: ``audit_context()`` over contextvars.

Context variables follow the work into threads started with ``contextvars.copy_context``,
into ``sync_to_async`` calls of async views, and into nested blocks, which override and
extend the outer ones.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import models
from django.utils.functional import LazyObject

from auditq.stream.encoding import encode
from auditq.stream.sealing import mask_named

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
HEADER = "auditq_context"
"""The Celery message header that carries a context into a task (see :func:`to_header`)."""
_UNSET: Any = object()


@dataclass(frozen=True)
class AuditContext:
    """The context applied to every change made while it is current."""

    actor: Any = None
    """A user instance (possibly lazy, like ``request.user``), a user primary key, or None."""
    remote_addr: str | None = None
    """The client's IP address."""
    request_id: str | None = None
    """An identifier shared by every change of one request."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """JSON-safe keys stored in ``AuditEntry.context``."""
    enabled: bool = True
    """False inside ``disable_auditing()``: no audit entries are recorded."""


@dataclass(frozen=True)
class KnownActor:
    """A user known by key and name, so that a worker need not load it to record it."""

    pk: Any
    """The user's primary key, JSON-safe."""
    text: str
    """``str(user)`` when the context was sent."""
    is_authenticated = True


def resolve_actor(actor: Any) -> tuple[Any, str]:
    """Return the actor's JSON-safe key and its text, ``(None, "")`` for nobody."""
    if isinstance(actor, KnownActor):
        return actor.pk, actor.text
    if actor is None or not getattr(actor, "is_authenticated", True):
        return None, ""
    if isinstance(actor, models.Model) or hasattr(actor, "_meta"):
        try:
            text = str(actor)
        except Exception:
            text = ""
        return encode(actor.pk), text[:255]
    return encode(actor), str(actor)[:255]


_current: ContextVar[AuditContext] = ContextVar("auditq_context", default=AuditContext())  # noqa: B039


def current() -> AuditContext:
    """Return the context in force here."""
    return _current.get()


def _check_actor(actor: Any) -> Any:
    if issubclass(type(actor), LazyObject):
        # request.user: resolved when a change is recorded, never here (an async
        # middleware must not query, and most requests change nothing). type(), since
        # isinstance() would evaluate it.
        return actor
    if actor is None or (isinstance(actor, int | str | uuid.UUID) and not isinstance(actor, bool)):
        return actor
    if hasattr(actor, "_meta") or hasattr(actor, "is_authenticated"):
        return actor
    raise ValueError(
        f"audit_context(actor=...) takes a user, a user's primary key or None, "
        f"not {type(actor).__name__}."
    )


def _check_remote_addr(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"audit_context(remote_addr=...) must be an IP address, not {value!r}."
        ) from None


def _check_request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        raise ValueError(
            "audit_context(request_id=...) must be 1 to 200 characters of [A-Za-z0-9._-], "
            f"not {value!r}."
        )
    return value


@contextmanager
def audit_context(
    *,
    actor: Any = _UNSET,
    remote_addr: str | None = _UNSET,
    request_id: str | None = _UNSET,
    **extra: Any,
) -> Iterator[AuditContext]:
    """Attach an actor, an address, a request id and extra keys to every change in the block.

    Args:
        actor: the user who makes the changes (an instance or its primary key).
        remote_addr: the client's IP address.
        request_id: an identifier shared by the block's changes.
        **extra: JSON-safe values stored in ``AuditEntry.context``; a key named like
            a masked field (``api_token``), at any depth, is kept as the mask, so that
            its value reaches no outbox row, message or entry.

    Raises:
        ValueError: an argument has the wrong type or shape (the message names it).

    Example:
        >>> with audit_context(actor=user, reason="csv import"):
        ...     import_rows(rows)
    """
    outer = _current.get()
    changes: dict[str, Any] = {"extra": {**outer.extra, **mask_named(encode(extra))}}
    if actor is not _UNSET:
        changes["actor"] = _check_actor(actor)
    if remote_addr is not _UNSET:
        changes["remote_addr"] = _check_remote_addr(remote_addr)
    if request_id is not _UNSET:
        changes["request_id"] = _check_request_id(request_id)
    token = _current.set(replace(outer, **changes))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


@contextmanager
def disable_auditing() -> Iterator[None]:
    """Record no audit entries for changes made in the block.

    Counter caches and ``@after_save`` callbacks still run: they keep data correct.
    """
    token = _current.set(replace(_current.get(), enabled=False))
    try:
        yield
    finally:
        _current.reset(token)


def to_header(context: AuditContext | None = None) -> dict[str, Any] | None:
    """The context as JSON for a task message: actor (key and name), request id, extra keys.

    ``None`` when none of them is set. The address stays behind: the task's changes are
    not made from it. Nor does ``disable_auditing()`` travel: it is a block's decision.
    Resolving a lazy ``request.user`` here may query the database.
    """
    context = current() if context is None else context
    header: dict[str, Any] = {}
    actor, text = resolve_actor(context.actor)
    if actor is not None:
        header["actor"], header["actor_repr"] = actor, text
    if context.request_id is not None:
        header["request_id"] = context.request_id
    if context.extra:
        header["extra"] = dict(context.extra)
    return header or None


def from_header(header: Any, **extra: Any) -> AbstractContextManager[AuditContext]:
    """The ``audit_context()`` a header written by :func:`to_header` describes, plus
    ``extra``; the actor is a :class:`KnownActor` (no query to load the user).

    Raises:
        ValueError: the header does not have that shape (the message says what is wrong).
    """
    if not isinstance(header, Mapping):
        raise ValueError(f"{HEADER} must be a JSON object, not {type(header).__name__}.")
    carried = header.get("extra", {})
    if not isinstance(carried, Mapping) or not all(isinstance(k, str) for k in carried):
        raise ValueError(f"{HEADER}['extra'] must be a JSON object.")
    given: dict[str, Any] = {}
    actor = header.get("actor")
    if actor is not None:
        if isinstance(actor, bool) or not isinstance(actor, int | str):
            raise ValueError(f"{HEADER}['actor'] must be a user's key, not {actor!r}.")
        given["actor"] = KnownActor(actor, str(header.get("actor_repr") or actor)[:255])
    if header.get("request_id") is not None:
        given["request_id"] = _check_request_id(header["request_id"])
    # The three arguments of audit_context() are never extra keys (to_header cannot write
    # them there): a header that has them is not auditq's.
    keys = {k: v for k, v in carried.items() if k not in ("actor", "remote_addr", "request_id")}
    return audit_context(**given, **{**keys, **extra})
