"""Consumer: events -> ``AuditEntry`` rows.

Wants every change of an ``@audited`` model, unless it was made inside
``disable_auditing()``. Entries are unique by ``event_id``, so writing an event twice
changes nothing. With ``AUDITQ["DATABASE"]`` they are written there, in a transaction of
their own that commits before the worker's (which clears the outbox rows): a worker that
dies between the two commits leaves the rows, and their next delivery skips the entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import orjson
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction
from django.db.models import Field, Model
from django.utils import timezone

from auditq import chain, conf, registry
from auditq.backends import backend
from auditq.models import AuditChainLane, AuditEntry
from auditq.stream.context import AuditContext
from auditq.stream.encoding import encode, json_bytes
from auditq.stream.events import REPR_LIMIT, Event, key_text


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

    def squash(self, earlier: Any, later: Any, action: str, changes: Mapping[str, Any]) -> Any:
        """Record the folded change if either was recorded and something is left to say."""
        wanted = earlier is not None or later is not None
        return 1 if wanted and (changes or action != "update") else None

    def record(self, events: Sequence[Event], using: str) -> None:
        """Write one entry per event; entries already written are left as they are.

        ``using`` is the outbox's database; the entries go to ``AUDITQ["DATABASE"]`` if set.
        """
        target = conf.get().DATABASE or using
        # Another database: its own transaction, committed first. The same: no savepoint.
        with transaction.atomic(using=target, savepoint=False):
            self._write(events, using, target)

    def _write(self, events: Sequence[Event], using: str, target: str) -> None:
        """Write the entries in ``target``; the objects' current text is read in ``using``."""
        types: dict[str, ContentType] = {}
        rows = []
        for event in events:
            content_type = types.get(event.model)
            if content_type is None:
                # The content types of the entries' database: its keys are its own.
                content_type = types[event.model] = _content_type(event.model, target)
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
        if conf.get().CHAIN:
            chain.extend(rows, target, _insert)
        else:
            _insert(rows, target)


def _insert(
    rows: list[dict[str, Any]], using: str, heads: dict[int, str] | None = None
) -> set[Any] | None:
    """Write the rows; rows whose event is already in the trail are skipped. A row
    without ``recorded_at`` gets the clock's time (the server's, on PostgreSQL).

    ``heads``: the rows are chained, and these are their lanes' new last hashes (by
    ``AuditChainLane`` key); where
    the database can, the same statement moves the heads, and the event ids inserted are
    returned (``None``: the caller moves the heads, and skipped nothing it had not
    already left out).
    """
    connection = connections[using]
    found = backend(connection)
    table = AuditEntry._meta.db_table
    if found.supports_json_rows and heads is not None:
        moved = [{"id": key, "last_hash": value} for key, value in heads.items()]
        return found.insert_chained_rows(
            connection,
            table,
            _columns(connection, _CHAINED),
            _rows_json(rows),
            unique="event_id",
            chains=AuditChainLane._meta.db_table,
            heads=orjson.dumps(moved).decode(),
        )
    if found.supports_json_rows:
        found.insert_json_rows(
            connection,
            table,
            _columns(connection, _ROW),
            _rows_json(rows),
            unique="event_id",
            now="recorded_at",
        )
    else:
        recorded_at = timezone.now()
        entries = [AuditEntry(**{"recorded_at": recorded_at, **row}) for row in rows]
        AuditEntry.objects.using(using).bulk_create(entries, ignore_conflicts=True, batch_size=1000)
    return None


_ROW = (
    "event_id",
    "content_type",
    "object_pk",
    "object_repr",
    "action",
    "changes",
    "actor",
    "actor_repr",
    "remote_addr",
    "request_id",
    "context",
    "occurred_at",
)
"""The ``AuditEntry`` fields an event fills (``recorded_at`` is the worker's clock)."""
_CHAINED = (*_ROW, "recorded_at", "chain_lane", "chain_hash")
"""The fields of a chained row: its hash covers its ``recorded_at``."""


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON document: orjson writes keys and times itself; a row holding
    an integer beyond 64 bits takes the slower, exact way."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json_bytes(encode(rows)).decode()


def _columns(connection: Any, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(column, SQL type)`` of each of ``names``, as the model declares them."""
    fields = [cast(Field, AuditEntry._meta.get_field(name)) for name in names]
    return [(str(field.column), field.db_type(connection) or "text") for field in fields]


def _content_type(label: str, using: str) -> ContentType:
    """The content type of an installed model (created if migrate has not yet).

    Raises:
        LookupError: no installed model has that label: the row is set aside rather
            than given a content type of its own.
    """
    model = apps.get_model(label)
    return ContentType.objects.db_manager(using).get_for_model(model)


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
