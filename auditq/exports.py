"""Exports of the trail: which entries (``select``), in which order, and how one entry
becomes one JSON Lines object or one CSV row.

One owner for the export's shape: ``manage.py auditq_export`` and the admin's background
export both write through here, so a file made either way reads the same.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast
from django.utils import timezone

from auditq.models import AuditEntry

COLUMNS = (
    "id",
    "event_id",
    "model",
    "object_pk",
    "object_repr",
    "action",
    "changes",
    "actor",
    "actor_id",
    "remote_addr",
    "request_id",
    "context",
    "occurred_at",
)
"""The keys of a JSON Lines object, and the CSV header, in this order."""

# What is read for each column: the model is the content type's key, made a label below;
# the actor is its repr (the user row may be gone); changes and context are read as the
# database's JSON text and written as they are, never decoded and encoded again (that
# was half the time of an export, and an integer beyond 64 bits stays exact).
_FIELDS = (
    "id",
    "event_id",
    "content_type_id",
    "object_pk",
    "object_repr",
    "action",
    "changes_json",
    "actor_repr",
    "actor_id",
    "remote_addr",
    "request_id",
    "context_json",
    "occurred_at",
)

FORMATS = ("jsonl", "csv")
"""The export formats, by the name ``--format`` takes (and the file's extension)."""

CHUNK_SIZE = 2000
"""Rows fetched per round trip (a server-side cursor's fetch on PostgreSQL)."""

Row = dict[str, Any]


def parse_model(label: str) -> type[models.Model]:
    """``app_label.Model`` to the model class.

    Raises:
        ValueError: not a label, or no installed model has it.
    """
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        raise ValueError(
            f"{label!r} is not an installed model (give app_label.Model, e.g. auth.User)."
        ) from None


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 date or date and time; without an offset, in the current time zone.

    Raises:
        ValueError: not ISO 8601.
    """
    try:
        found = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or "
            "2026-01-31T08:00:00+00:00)."
        ) from None
    return timezone.make_aware(found) if timezone.is_naive(found) else found


def select(
    *,
    model: type[models.Model] | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    using: str | None = None,
) -> models.QuerySet[AuditEntry]:
    """The entries of ``model`` (all models: ``None``) that occurred at ``since`` or later
    and before ``until``, oldest first, from ``using`` (``None``: the database the routers
    give the entries).

    Raises:
        ValueError: ``since`` is not before ``until``.
    """
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()}).")
    entries = AuditEntry.objects.db_manager(using).all()
    if model is not None:
        entries = entries.for_model(model)
    if since is not None:
        entries = entries.filter(occurred_at__gte=since)
    if until is not None:
        entries = entries.filter(occurred_at__lt=until)
    return oldest_first(entries)


def oldest_first(entries: models.QuerySet[AuditEntry]) -> models.QuerySet[AuditEntry]:
    """``entries`` in the export's order: by time, then by id (one total order, which
    :func:`after` continues)."""
    return entries.order_by("occurred_at", "id")


def after(entries: models.QuerySet[AuditEntry], position: Sequence[Any]) -> models.QuerySet:
    """The entries past ``position`` (the ``[occurred_at ISO text, id]`` of the last row
    written) in the export's order: a keyset, so each chunk starts where the last ended
    at the cost of an index probe, however deep into the trail."""
    when = datetime.datetime.fromisoformat(position[0])
    # The plain bound lets an index on the time start there; the OR alone would not.
    later = entries.filter(occurred_at__gte=when)
    return later.filter(Q(occurred_at__gt=when) | Q(occurred_at=when, id__gt=position[1]))


def rows(entries: models.QuerySet[AuditEntry], chunk_size: int = CHUNK_SIZE) -> Iterator[Row]:
    """Each entry as a dict with the keys :data:`COLUMNS`, streamed (constant memory: no
    model instances, and a server-side cursor on PostgreSQL). ``changes`` and ``context``
    are JSON text, as the database holds them."""
    using = entries.db
    labels: dict[int, str] = {}
    entries = entries.annotate(
        changes_json=Cast("changes", models.TextField()),
        context_json=Cast("context", models.TextField()),
    )
    for values in entries.values_list(*_FIELDS).iterator(chunk_size=chunk_size):
        row = dict(zip(COLUMNS, values, strict=True))
        content_type_id = row["model"]
        label = labels.get(content_type_id)
        if label is None:
            found = ContentType.objects.db_manager(using).get_for_id(content_type_id)
            label = labels[content_type_id] = f"{found.app_label}.{found.model}"
        row["model"] = label
        row["event_id"] = str(row["event_id"])
        row["occurred_at"] = row["occurred_at"].isoformat()
        yield row


def position(row: Row) -> list[Any]:
    """Where ``row`` stands in the export's order, as JSON data (see :func:`after`)."""
    return [row["occurred_at"], row["id"]]


class Writer:
    """Turns rows into the bytes of one format: ``header()`` once, then ``lines(rows)``."""

    def __init__(self, format: str) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}.")
        self.format = format
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\n")

    def header(self) -> bytes:
        """What a file starts with: the CSV header row; nothing for JSON Lines."""
        if self.format == "jsonl":
            return b""
        self._csv.writerow(COLUMNS)
        return self._take()

    def lines(self, batch: Sequence[Row]) -> bytes:
        """The lines of ``batch``: one JSON object, or one CSV row, per entry."""
        if self.format == "csv":
            self._csv.writerows(row.values() for row in batch)
            return self._take()
        lines = []
        for row in batch:
            line = dict(row)
            line["changes"] = orjson.Fragment(row["changes"])
            line["context"] = orjson.Fragment(row["context"])
            lines.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        return b"".join(lines)

    def _take(self) -> bytes:
        text = self._text.getvalue()
        self._text.seek(0)
        self._text.truncate()
        return text.encode()
