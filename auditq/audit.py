"""Consumer: events -> ``AuditEntry`` rows.

Wants every change of an ``@audited`` model, unless it was made inside
``disable_auditing()``. Entries are unique by ``event_id``, so writing an event twice
changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.utils import timezone

from auditq import registry
from auditq.context import AuditContext
from auditq.events import Event

REPR_LIMIT = 200


class AuditConsumer:
    """Writes the audit trail."""

    name = "audit"

    def models(self) -> Iterable[type[Model]]:
        """Every ``@audited`` model."""
        return registry.audited_models()

    def capture(
        self,
        instance: Model | None,
        action: str,
        changes: Mapping[str, Any],
        context: AuditContext,
    ) -> Any:
        """Record the change unless auditing is disabled where it was made, or it is an
        update that changed no recorded field."""
        return 1 if context.enabled and (changes or action != "update") else None

    def record(self, events: Sequence[Event], using: str) -> None:
        """Write one entry per event; entries already written are left as they are."""
        from auditq.models import AuditEntry

        recorded_at = timezone.now()
        types: dict[str, ContentType] = {}
        entries = []
        for event in events:
            content_type = types.get(event.model)
            if content_type is None:
                content_type = types[event.model] = _content_type(event.model, using)
            ctx = event.context
            entries.append(
                AuditEntry(
                    event_id=event.id,
                    content_type=content_type,
                    object_pk=str(event.pk),
                    object_repr=event.repr
                    if event.repr is not None
                    else _current_repr(content_type, event.pk, using),
                    action=event.action,
                    changes=event.changes,
                    actor_id=ctx["actor_id"],
                    actor_repr=ctx["actor_repr"],
                    remote_addr=ctx["remote_addr"],
                    request_id=ctx["request_id"] or "",
                    context=ctx["extra"],
                    occurred_at=event.occurred_at,
                    recorded_at=recorded_at,
                )
            )
        AuditEntry.objects.using(using).bulk_create(entries, ignore_conflicts=True, batch_size=1000)


def _content_type(label: str, using: str) -> ContentType:
    app_label, model = label.split(".", 1)
    manager = ContentType.objects.db_manager(using)
    try:
        return manager.get_by_natural_key(app_label, model)
    except ContentType.DoesNotExist:
        return manager.get_or_create(app_label=app_label, model=model)[0]


def _current_repr(content_type: ContentType, pk: Any, using: str) -> str:
    """The object's text now, for changes whose repr was not taken on the request path
    (many-to-many changes seen from the other side)."""
    model = content_type.model_class()
    instance = model and model._base_manager.using(using).filter(pk=pk).first()
    try:
        return str(instance)[:REPR_LIMIT] if instance is not None else str(pk)
    except Exception:
        return str(pk)
