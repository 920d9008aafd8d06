"""Consumer: ``@after_save`` / ``@after_delete`` handlers, run in workers, effectively once.

A change carries the names of the handlers whose ``when`` held; the worker writes one
``CallbackRun`` per (handler, change), and each run is its own task whose handler writes
commit with the run's success. Retries, sealed masked values: docs/callbacks.md."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from auditq import conf, registry
from auditq.delivery import relay
from auditq.delivery.backoff import retry_delay
from auditq.models import CallbackRun
from auditq.registry import TrackedField
from auditq.stream import sealing
from auditq.stream.context import AuditContext, audit_context
from auditq.stream.events import REPR_LIMIT, Event, from_data, key_text, to_data

logger = logging.getLogger("auditq")

RUN = "auditq.tasks.run_callback"
KEEP_ERRORS = 20
"""Failed attempts kept on a run (the newest)."""


def _clear_values(
    instance: Model, loaded: Mapping[str, Any], action: str, fields: Iterable[TrackedField]
) -> dict[str, list[Any]]:
    """``{name: [old, new]}`` of ``fields`` before any masking: the handlers get them
    sealed. A create has no old value, a delete no new one."""
    values = instance.__dict__
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


class CallbacksConsumer:
    """Runs the handlers registered with ``@after_save`` and ``@after_delete``."""

    name = "callbacks"

    def models(self) -> Iterable[type[Model]]:
        """Every model with a handler."""
        return {handler.model for handler in registry.handlers()}

    def capture(
        self,
        model: type[Model],
        instance: Model | None,
        action: str,
        changes: Mapping[str, Any],
        context: AuditContext,
        loaded: Mapping[str, Any],
    ) -> Any:
        """``{"handlers": [names]}`` of the handlers this change needs, ``None`` if none;
        with ``"sealed"``: the clear values of the masked fields it changed."""
        if instance is None:
            return None  # a many-to-many change seen from the other side: not a save
        on = "delete" if action == "delete" else "save"
        # The handlers of the model whose row changed: a child's save changes its
        # ancestors' rows too, and runs their handlers (not its own twice).
        wanted = [
            handler.name
            for handler in registry.handlers_for(model, on)
            if handler.when is None or handler.when(instance)
        ]
        if not wanted:
            return None
        data: dict[str, Any] = {"handlers": wanted}
        tracking = registry.tracking(model)
        masked = [f for f in tracking.masked if f.name in changes] if tracking else []
        if masked:  # rare: most changes touch no masked field
            data["sealed"] = sealing.seal(_clear_values(instance, loaded, action, masked))
        return data

    def squash(self, earlier: Any, later: Any, action: str, changes: Mapping[str, Any]) -> Any:
        """The handlers the last change asked for (``when`` held on the final state); the
        masked fields' clear values folded as the changes are: first old, last new."""
        if later is None:
            return None
        first = sealing.unseal(earlier["sealed"]) if earlier and "sealed" in earlier else {}
        last = sealing.unseal(later["sealed"]) if "sealed" in later else {}
        clear = {}
        for name in changes:
            if name in first or name in last:
                old = None if action == "create" else (first.get(name) or last[name])[0]
                new = None if action == "delete" else (last.get(name) or first[name])[1]
                clear[name] = [old, new]
        data = {key: value for key, value in later.items() if key != "sealed"}
        if clear:
            data["sealed"] = sealing.seal(clear)
        return data

    def record(self, events: Sequence[Event], using: str) -> None:
        """Write one pending run per (handler, event), once; publish them after commit."""

        runs = []
        for event in events:
            data = event.consumers[self.name]
            for name in data["handlers"]:
                handler = registry.handler(name)
                runs.append(
                    CallbackRun(
                        handler=name,
                        event_id=event.id,
                        model=event.model,
                        object_pk=key_text(event.pk),
                        object_repr=(event.repr or "")[:REPR_LIMIT],
                        action=event.action,
                        event=to_data(event),
                        sealed=data.get("sealed", ""),
                        max_attempts=1 + (handler.retries if handler else 0),
                    )
                )
        CallbackRun.objects.using(using).bulk_create(runs, ignore_conflicts=True)
        # Publish at once from this worker; the relay's sweep is the safety net.
        transaction.on_commit(lambda: _publish_due_quietly(using), using=using)


def _publish_due_quietly(using: str) -> None:
    try:
        publish_due(using)
    except Exception as exc:  # the relay publishes them on its next round
        logger.warning("auditq: callback runs not published yet (%s)", exc)


def publish_due(using: str, app: Any = None, connection: Any = None) -> int:
    """Publish every pending run whose attempt is due; return how many.

    A run is claimed (``published_at``) before it is published, released if the publish
    fails, and published again if still pending ``RELAY_AFTER_SECONDS`` later.
    """

    return relay.publish_rows(
        CallbackRun.objects.using(using).filter(
            status=CallbackRun.Status.PENDING, next_attempt_at__lte=timezone.now()
        ),
        task=RUN,
        label="handler",
        queue_of=_queue_of,
        using=using,
        app=app,
        connection=connection,
    )


def _queue_of(name: str) -> str | None:
    handler = registry.handler(name)
    return (handler.queue if handler else None) or conf.get().QUEUE


def run(run_id: int, using: str) -> str:
    """Run one handler for one change, effectively once; return the run's status."""

    with transaction.atomic(using=using):
        found = CallbackRun.objects.using(using).select_for_update().filter(pk=run_id).first()
        if found is None or found.status != CallbackRun.Status.PENDING:
            return found.status if found else "missing"
        handler = registry.handler(found.handler)
        found.attempts += 1
        if handler is None:
            _finish(found, CallbackRun.Status.FAILED, f"no handler {found.handler!r} here")
            return found.status
        event = from_data(found.event)
        clear: dict[str, Any] = {}
        try:
            if found.sealed:
                # Opened here, in memory: a key that does not open it is a failed attempt.
                clear = sealing.unseal(found.sealed)
                event = replace(event, changes={**event.changes, **clear})
            with transaction.atomic(using=using), _context_of(event, handler):
                outcome = _call(handler, event, using)
        except Exception as exc:
            _failed(found, handler, exc, _masked_values(handler, event, clear, using))
            return found.status
        if outcome is None:
            _finish(found, CallbackRun.Status.SUCCEEDED)
        else:
            _finish(found, CallbackRun.Status.SKIPPED, outcome)
    return found.status


def _call(handler: registry.Handler, event: Event, using: str) -> str | None:
    """Call the handler; return why it was skipped, or ``None`` once it ran."""
    if handler.on == "delete":
        handler.func(event)
        return None
    model = apps.get_model(event.model)
    instance = model._base_manager.using(using).filter(pk=event.pk).first()
    if instance is None:
        return "skipped: the row no longer exists"
    handler.func(instance, event)
    return None


def _masked_values(
    handler: registry.Handler, event: Event, clear: dict[str, Any], using: str
) -> list[Any]:
    """The masked values a failed handler could have quoted in its error: those the run
    opened, and the row's current ones (a handler reads the instance too)."""
    found = [value for pair in clear.values() if isinstance(pair, list) for value in pair]
    tracking = registry.tracking(handler.model)
    if tracking is not None and tracking.masked and event.action != "delete":
        attnames = [field.attname for field in tracking.masked]
        model = apps.get_model(event.model)
        try:
            row = model._base_manager.using(using).filter(pk=event.pk).values_list(*attnames)
            found.extend(value for values in row for value in values)
        except Exception:  # the attempt's own error is what gets recorded
            logger.exception("auditq: could not read %s's masked values", event.model)
    return found


def _context_of(event: Event, handler: registry.Handler) -> Any:
    """The change's own context, so that what the handler changes is attributed to the
    same actor and request, and names the handler and the change that caused it."""
    actor: Any = event.actor_id
    if actor is not None:
        user = get_user_model()._base_manager.filter(pk=actor).first()
        actor = user if user is not None else actor
    return audit_context(
        actor=actor,
        remote_addr=event.remote_addr,
        request_id=event.request_id,
        **{**event.context, "via_callback": handler.name, "caused_by": str(event.id)},
    )


def _finish(found: Any, status: str, note: str = "") -> None:

    found.status = status
    found.note = note[:255]
    found.finished_at = timezone.now()
    if status != CallbackRun.Status.FAILED:
        found.sealed = ""  # done with: a run that failed keeps them for a retry by hand
    found.save(update_fields=["status", "note", "finished_at", "attempts", "last_error", "sealed"])


def _failed(found: Any, handler: registry.Handler, exc: Exception, masked: list[Any]) -> None:
    """Record a failed attempt; the masked values the error may quote are scrubbed from
    what is stored and logged."""

    error = sealing.scrub(f"{type(exc).__name__}: {exc}", masked)
    found.last_error = error
    trace = sealing.scrub(traceback.format_exc(), masked)
    found.errors = [
        *found.errors,
        {"at": timezone.now().isoformat(), "error": error, "traceback": trace},
    ][-KEEP_ERRORS:]
    if found.attempts >= found.max_attempts:
        found.status = CallbackRun.Status.FAILED
        found.note = f"gave up after {found.attempts} attempts"
        found.finished_at = timezone.now()
        found.save(
            update_fields=["status", "note", "finished_at", "attempts", "last_error", "errors"]
        )
        logger.error("auditq: %s failed for good on %s: %s", handler.name, found.object_pk, error)
        return
    found.next_attempt_at = timezone.now() + retry_delay(found.attempts, handler.backoff)
    found.published_at = None
    found.save(
        update_fields=["attempts", "last_error", "errors", "next_attempt_at", "published_at"]
    )
    logger.warning("auditq: %s failed (attempt %d): %s", handler.name, found.attempts, error)


def retry(runs: Iterable[Any]) -> int:
    """Make failed or waiting runs due now, with one more attempt each; return how many.

    Used by the admin's actions: the relay in the workers publishes them.
    """

    count = 0
    for found in runs:
        if found.status not in (CallbackRun.Status.FAILED, CallbackRun.Status.PENDING):
            continue
        found.status = CallbackRun.Status.PENDING
        found.max_attempts = max(found.max_attempts, found.attempts + 1)
        found.next_attempt_at = timezone.now()
        found.published_at = None
        found.finished_at = None
        found.note = "retried by hand"
        found.save(
            update_fields=[
                "status",
                "max_attempts",
                "next_attempt_at",
                "published_at",
                "finished_at",
                "note",
            ]
        )
        count += 1
    return count
