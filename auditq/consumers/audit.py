"""Consumer: events -> ``AuditEntry`` rows.

Wants every change of an ``@audited`` model, unless it was made inside
``disable_auditing()``. Entries are unique by ``event_id``, so writing an event twice
changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.db.models import Model
from django.utils import timezone

from auditq import registry
from auditq.stream.context import AuditContext
from auditq.stream.events import Event, key_text

REPR_LIMIT = 200


class AuditConsumer:
    """Writes the audit trail."""

    name = "audit"

    def models(self) -> Iterable[type[Model]]:
        """Every ``@audited`` model."""
        return registry.audited_models()

    def capture(
        self,
        model: type[Model],
        instance: Model | None,
        action: str,
        changes: Mapping[str, Any],
        context: AuditContext,
        loaded: Mapping[str, Any],
    ) -> Any:
        """Record the change unless auditing is disabled where it was made, or it is an
        update that changed no recorded field."""
        return 1 if context.enabled and (changes or action != "update") else None

    def record(self, events: Sequence[Event], using: str) -> None:
        """Write one entry per event; entries already written are left as they are."""
        types: dict[str, ContentType] = {}
        rows = []
        for event in events:
            content_type = types.get(event.model)
            if content_type is None:
                content_type = types[event.model] = _content_type(event.model, using)
            rows.append(
                {
                    "event_id": event.id,
                    "content_type_id": content_type.pk,
                    "object_pk": key_text(event.pk),
                    "object_repr": event.repr
                    if event.repr is not None
                    else _current_repr(content_type, event.pk, using),
                    "action": event.action,
                    "changes": event.changes,
                    "actor_id": event.actor_id,
                    "actor_repr": event.actor_repr,
                    "remote_addr": event.remote_addr,
                    "request_id": event.request_id or "",
                    "context": event.context,
                    "occurred_at": event.occurred_at,
                }
            )
        if connections[using].vendor == "postgresql":
            _insert_postgresql(rows, using)
        else:
            _insert(rows, using)


def _insert(rows: list[dict[str, Any]], using: str) -> None:
    from auditq.models import AuditEntry

    recorded_at = timezone.now()
    entries = [AuditEntry(**row, recorded_at=recorded_at) for row in rows]
    AuditEntry.objects.using(using).bulk_create(entries, ignore_conflicts=True, batch_size=1000)


def _insert_postgresql(rows: list[dict[str, Any]], using: str) -> None:
    """One statement for the whole batch: the rows travel as one JSON document that the
    server unpacks (``jsonb_to_recordset``), several times faster than ``bulk_create``."""
    from auditq.models import AuditEntry

    connection = connections[using]
    meta = AuditEntry._meta
    actor = meta.get_field("actor").target_field.rel_db_type(connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {connection.ops.quote_name(meta.db_table)}
                (event_id, content_type_id, object_pk, object_repr, action, changes,
                 actor_id, actor_repr, remote_addr, request_id, context, occurred_at,
                 recorded_at)
            SELECT event_id, content_type_id, object_pk, object_repr, action, changes,
                   actor_id, actor_repr, remote_addr, request_id, context, occurred_at,
                   clock_timestamp()
            FROM jsonb_to_recordset(%s::jsonb) AS r(
                event_id uuid, content_type_id integer, object_pk text, object_repr text,
                action text, changes jsonb, actor_id {actor}, actor_repr text,
                remote_addr inet, request_id text, context jsonb, occurred_at timestamptz)
            ON CONFLICT (event_id) DO NOTHING
            """,
            [orjson.dumps(rows).decode()],
        )


def _content_type(label: str, using: str) -> ContentType:
    app_label, model = label.split(".", 1)
    manager = ContentType.objects.db_manager(using)
    try:
        return manager.get_by_natural_key(app_label, model)
    except ContentType.DoesNotExist:
        return manager.get_or_create(app_label=app_label, model=model)[0]


def _current_repr(content_type: ContentType, pk: Any, using: str) -> str:
    """The object's text now, for changes whose repr was not taken on the request path:
    many-to-many changes seen from the other side, and a ``__str__`` that needed a query
    (the row's key when the row is gone)."""
    model = content_type.model_class()
    key = tuple(pk) if isinstance(pk, list) else pk
    instance = model and model._base_manager.using(using).filter(pk=key).first()
    try:
        return str(instance)[:REPR_LIMIT] if instance is not None else key_text(pk)
    except Exception:
        return key_text(pk)
