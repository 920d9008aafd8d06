"""The recording side: extend the chains with a batch of new entries.

Each chain's head row (``AuditChain``) is locked (``SELECT ... FOR UPDATE``; SQLite's
write lock already serializes writers) before the batch is hashed, and stays locked until
the recording transaction commits: concurrent workers and relay threads extend a chain
one after the other, so its entries' ids follow its order. Under the lock the batch is
hashed in order and written, and the heads move on; an event already in the trail (a
duplicate delivery) never extends a chain. Batch-shaped, whatever the batch's size: on
PostgreSQL two statements (lock the heads; write the entries and move the heads), on
SQLite a few more, in process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections, transaction
from django.db.models import Subquery
from django.utils import timezone

from auditq.backends import backend
from auditq.chain.canonical import GENESIS, entry_hash
from auditq.models import AuditChain, AuditEntry

Rows = list[dict[str, Any]]
Insert = Callable[[Rows, str, dict[int, str]], set[Any] | None]
"""Writes chained rows, given their chains' new last hashes: returns the event ids it
inserted and moves the heads itself, or returns ``None`` (everything inserted; the
heads are left to :func:`extend`)."""


def extend(rows: Rows, using: str, insert: Insert) -> int:
    """Chain ``rows`` (``AuditEntry`` column values, in recording order) and write the
    new ones with ``insert``; return how many were written.

    Each new row gets its ``recorded_at`` (the hash covers it) and its ``chain_hash``.
    ``using`` is the database the entries are written to; the work joins its open
    transaction, or opens one.
    """
    if not rows:
        return 0
    # PostgreSQL: one statement writes the entries and moves the heads, and says which
    # rows ON CONFLICT skipped (nearly never: then the chain is relinked without them).
    # Elsewhere the rows already recorded are looked up first, in the write lock.
    optimistic = backend(connections[using]).supports_json_rows
    with transaction.atomic(using=using, savepoint=False):
        start = lock(sorted({row["content_type_id"] for row in rows}), using)
        events = [row["event_id"] for row in rows]
        seen = set() if optimistic else set(_recorded(events, using))
        heads = dict(start)
        recorded_at = timezone.now()
        new: Rows = []
        for row in rows:
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            row["recorded_at"] = recorded_at
            content_type = row["content_type_id"]
            row["chain_hash"] = heads[content_type] = entry_hash(heads[content_type], row)
            new.append(row)
        if not new:
            return 0
        moved = {key: heads[key] for key in {row["content_type_id"] for row in new}}
        inserted = insert(new, using, moved)
        if inserted is None:
            _move(new, using)
        elif len(inserted) < len(new):
            new = [row for row in new if row["event_id"] in inserted]
            _relink(new, start, using)
    return len(new)


def _recorded(events: list[Any], using: str) -> Any:
    return (
        AuditEntry.objects.using(using)
        .filter(event_id__in=events)
        .values_list("event_id", flat=True)
    )


def _move(new: Rows, using: str) -> None:
    """Move each chain's head to its last new row."""
    last = {row["content_type_id"]: row for row in new}
    chains = AuditChain.objects.using(using)
    for content_type, row in last.items():
        chains.filter(pk=content_type).update(
            last_hash=row["chain_hash"],
            last_entry_id=Subquery(
                AuditEntry.objects.filter(event_id=row["event_id"]).values("id")[:1]
            ),
        )


def _relink(inserted: Rows, start: dict[int, str], using: str) -> None:
    """Hash the rows written again, without those the insert skipped (events another
    transaction recorded while this one waited for the chain), and move the heads."""
    heads = dict(start)
    entries = AuditEntry.objects.using(using)
    for row in inserted:
        content_type = row["content_type_id"]
        linked = entry_hash(heads[content_type], row)
        if linked != row["chain_hash"]:
            entries.filter(event_id=row["event_id"]).update(chain_hash=linked)
            row["chain_hash"] = linked
        heads[content_type] = linked
    _move(inserted, using)
    for content_type, value in start.items():
        if all(row["content_type_id"] != content_type for row in inserted):
            # Every row of this chain was skipped: its head goes back where it was.
            AuditChain.objects.using(using).filter(pk=content_type).update(last_hash=value)


def lock(content_types: list[int], using: str) -> dict[int, str]:
    """Lock the chains of ``content_types`` (in key order: no deadlocks), creating those
    that have no row yet; return each one's last hash."""
    chains = AuditChain.objects.using(using).select_for_update().order_by("pk")
    heads = dict(chains.filter(pk__in=content_types).values_list("pk", "last_hash"))
    missing = [key for key in content_types if key not in heads]
    if missing:
        # Another worker may create the same row at once: one of the two waits for the
        # other, then skips it and locks it.
        AuditChain.objects.using(using).bulk_create(
            [AuditChain(content_type_id=key) for key in missing], ignore_conflicts=True
        )
        heads.update(chains.filter(pk__in=missing).values_list("pk", "last_hash"))
    return {key: heads[key] or GENESIS for key in content_types}
