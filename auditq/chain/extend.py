"""The recording side: extend the chains with a batch of new entries.

Each chain's head row (``AuditChain``) is locked (``SELECT ... FOR UPDATE``; SQLite's
write lock already serializes writers) before the batch is hashed, and stays locked until
the recording transaction commits: concurrent workers and relay threads extend a chain
one after the other, so its entries' ids follow its order. Under the lock, the events
already in the trail are left out (a duplicate never extends a chain), then the rest are
hashed in order and written, and the heads move on. Batch-shaped: a few statements per
batch, whatever its size (one ``UPDATE`` per model in it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from auditq.chain.canonical import GENESIS, entry_hash
from auditq.models import AuditChain, AuditEntry

Rows = list[dict[str, Any]]


def extend(rows: Rows, using: str, insert: Callable[[Rows, str], None]) -> int:
    """Chain ``rows`` (``AuditEntry`` column values, in recording order) and write the
    new ones with ``insert(rows, using)``; return how many were new.

    Each new row gets its ``recorded_at`` (the hash covers it) and its ``chain_hash``.
    ``using`` is the database the entries are written to; the work joins its open
    transaction, or opens one.
    """
    if not rows:
        return 0
    with transaction.atomic(using=using, savepoint=False):
        heads = lock(sorted({row["content_type_id"] for row in rows}), using)
        events = [row["event_id"] for row in rows]
        seen = set(
            AuditEntry.objects.using(using)
            .filter(event_id__in=events)
            .values_list("event_id", flat=True)
        )
        recorded_at = timezone.now()
        new: Rows = []
        last: dict[int, Any] = {}
        for row in rows:
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            row["recorded_at"] = recorded_at
            content_type = row["content_type_id"]
            row["chain_hash"] = heads[content_type] = entry_hash(heads[content_type], row)
            last[content_type] = row["event_id"]
            new.append(row)
        if new:
            insert(new, using)
        chains = AuditChain.objects.using(using)
        for content_type, event_id in last.items():
            chains.filter(pk=content_type).update(
                last_hash=heads[content_type],
                last_entry_id=Subquery(
                    AuditEntry.objects.filter(event_id=event_id).values("id")[:1]
                ),
            )
    return len(new)


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
