"""The audit context in Celery messages: a task sent inside ``audit_context()`` runs inside
it too, in whichever worker picks it up.

``before_task_publish`` writes the sender's context into the ``auditq_context`` message
header (JSON, shaped by ``stream/context.py``); ``task_prerun`` enters it in the worker
with ``via_task``, and ``task_postrun`` leaves it. An eager task (``task_always_eager``,
``apply()``) already runs in its sender's context: it only gains ``via_task``. This covers
every task sent with ``delay()``, ``apply_async()`` or ``send_task()``, auditq's public
ones included; the messages auditq sends for its rows carry none (``broker.send``).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun

from auditq.stream.context import (
    HEADER,
    AuditContext,
    audit_context,
    current,
    from_header,
    to_header,
)

logger = logging.getLogger("auditq")

_Entered = tuple[str | None, AbstractContextManager[AuditContext] | None]
_entered: ContextVar[tuple[_Entered, ...]] = ContextVar("auditq_task_contexts", default=())
"""The contexts entered by running tasks, innermost last (an eager task may run inside
another task)."""


def add_header(sender: Any = None, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """``before_task_publish``: put the current context in the message's headers.

    A header given explicitly (``apply_async(headers=...)``) is kept, ``None`` too (auditq's
    own messages for its rows: ``broker.send``). A publish never fails because of its
    context: an actor that cannot be read here (a lazy ``request.user`` in an async view)
    is left out, and logged.
    """
    if headers is None or HEADER in headers:
        return
    context = current()
    try:
        header = to_header(context)
    except Exception as exc:
        logger.warning(
            "auditq: task %s is sent without its actor, which could not be read here "
            "(%s: %s); pass audit_context(actor=...) a loaded user.",
            sender,
            type(exc).__name__,
            exc,
        )
        header = to_header(replace(context, actor=None))
    if header is not None:
        headers[HEADER] = header


def _carried(request: Any) -> Any:
    """The header as Celery exposes it: an attribute of the request (protocol 2), or in
    ``request.headers`` (the custom headers)."""
    found = getattr(request, HEADER, None)
    if found is None:
        found = (getattr(request, "headers", None) or {}).get(HEADER)
    return found


def _active(context: AuditContext) -> bool:
    return context.actor is not None or context.request_id is not None or bool(context.extra)


def enter(sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """``task_prerun``: enter the context the message carried, with ``via_task``."""
    request = getattr(task, "request", None)
    name = getattr(task, "name", None) or str(sender)
    entered: AbstractContextManager[AuditContext] | None = None
    try:
        if getattr(request, "is_eager", False):
            # In process: the sender's context is already the current one.
            if _active(current()):
                entered = audit_context(via_task=name)
        else:
            header = _carried(request)
            if header is not None:
                entered = from_header(header, via_task=name)
        if entered is not None:
            entered.__enter__()
    except ValueError as exc:
        logger.warning("auditq: task %s[%s] ignores its %s header: %s", name, task_id, HEADER, exc)
        entered = None
    finally:
        _entered.set((*_entered.get(), (task_id, entered)))


def leave(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    """``task_postrun``: leave the context :func:`enter` entered for this task."""
    stack = _entered.get()
    if not stack or stack[-1][0] != task_id:
        return
    _entered.set(stack[:-1])
    entered = stack[-1][1]
    if entered is not None:
        entered.__exit__(None, None, None)


def connect() -> None:
    """Connect the three handlers (once, whatever the number of calls)."""
    before_task_publish.connect(add_header, weak=False, dispatch_uid="auditq:context-out")
    task_prerun.connect(enter, weak=False, dispatch_uid="auditq:context-in")
    task_postrun.connect(leave, weak=False, dispatch_uid="auditq:context-leave")
