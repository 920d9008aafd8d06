"""The recording side: extend the chains with a batch of new entries.

Each model's trail is woven of up to :data:`~auditq.models.LANES` chains, its lanes
(``AuditChainLane``). A recording transaction locks one lane of each model in its batch
(``SELECT ... FOR UPDATE SKIP LOCKED``: the lowest lane no other transaction holds, a
new lane when all are held, and when all are held and there are as many as there may be,
it waits for one), hashes the batch's entries onto it and keeps it locked until it
commits: concurrent workers and relay threads record one model side by side, each on a
lane of its own, and each lane's entries follow one another in key order. SQLite's write
lock already serializes writers: there every batch takes lane 0. Under the lock the
batch is hashed in order and written, and the heads move on; an event already in the
trail (a duplicate delivery) never extends a lane. Batch-shaped, whatever the batch's
size: on PostgreSQL two statements for a batch of one model (lock a lane; write the
entries and move the head), on SQLite a few more, in process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import Subquery
from django.utils import timezone

from auditq.backends import backend
from auditq.chain.canonical import GENESIS, entry_hash
from auditq.models import LANES, AuditChain, AuditChainLane, AuditEntry

Rows = list[dict[str, Any]]
Insert = Callable[[Rows, str, dict[int, str]], set[Any] | None]
"""Writes chained rows, given their lanes' new last hashes (by ``AuditChainLane`` key):
returns the event ids it inserted and moves the heads itself, or returns ``None``
(everything inserted; the heads are left to :func:`extend`)."""


@dataclass(frozen=True)
class Head:
    """A locked lane: its row's key, its number and the hash the next entry links to."""

    pk: int
    lane: int
    last_hash: str


def extend(rows: Rows, using: str, insert: Insert) -> int:
    """Chain ``rows`` (``AuditEntry`` column values, in recording order) and write the
    new ones with ``insert``; return how many were written.

    Each new row gets its ``recorded_at`` (the hash covers it), its ``chain_lane`` and its
    ``chain_hash``. ``using`` is the database the entries are written to; the work joins
    its open transaction, or opens one.
    """
    if not rows:
        return 0
    # PostgreSQL: one statement writes the entries and moves the heads, and says which
    # rows ON CONFLICT skipped (nearly never: then the lanes are relinked without them).
    # Elsewhere the rows already recorded are looked up first, in the write lock.
    optimistic = backend(connections[using]).supports_json_rows
    with transaction.atomic(using=using, savepoint=False):
        start = lock(sorted({row["content_type_id"] for row in rows}), using)
        events = [row["event_id"] for row in rows]
        seen = set() if optimistic else set(_recorded(events, using))
        heads = {key: head.last_hash for key, head in start.items()}
        recorded_at = timezone.now()
        new: Rows = []
        for row in rows:
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            row["recorded_at"] = recorded_at
            content_type = row["content_type_id"]
            row["chain_lane"] = start[content_type].lane
            row["chain_hash"] = heads[content_type] = entry_hash(heads[content_type], row)
            new.append(row)
        if not new:
            return 0
        moved = {start[key].pk: heads[key] for key in {row["content_type_id"] for row in new}}
        inserted = insert(new, using, moved)
        if inserted is None:
            _move(new, start, using)
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


def _move(new: Rows, start: dict[int, Head], using: str) -> None:
    """Move each lane's head to its last new row."""
    last = {row["content_type_id"]: row for row in new}
    lanes = AuditChainLane.objects.using(using)
    for content_type, row in last.items():
        lanes.filter(pk=start[content_type].pk).update(
            last_hash=row["chain_hash"],
            last_entry_id=Subquery(
                AuditEntry.objects.filter(event_id=row["event_id"]).values("id")[:1]
            ),
        )


def _relink(inserted: Rows, start: dict[int, Head], using: str) -> None:
    """Hash the rows written again, without those the insert skipped (events another
    transaction recorded while this one waited for a lane), and move the heads."""
    heads = {key: head.last_hash for key, head in start.items()}
    entries = AuditEntry.objects.using(using)
    for row in inserted:
        content_type = row["content_type_id"]
        linked = entry_hash(heads[content_type], row)
        if linked != row["chain_hash"]:
            entries.filter(event_id=row["event_id"]).update(chain_hash=linked)
            row["chain_hash"] = linked
        heads[content_type] = linked
    _move(inserted, start, using)
    for content_type, head in start.items():
        if all(row["content_type_id"] != content_type for row in inserted):
            # Every row of this lane was skipped: its head goes back where it was.
            AuditChainLane.objects.using(using).filter(pk=head.pk).update(last_hash=head.last_hash)


def lock(content_types: list[int], using: str) -> dict[int, Head]:
    """Lock one lane of each of ``content_types`` (models in key order: no deadlocks);
    return each model's locked lane.

    A model's lanes are created as they are needed: a new one when every lane there is
    is held by another transaction, until there are :data:`~auditq.models.LANES`.
    """
    lanes = AuditChainLane.objects.using(using)
    heads = {}
    for content_type in content_types:
        head = _free_lane(content_type, using)
        while head is None:
            count = lanes.filter(content_type_id=content_type).count()
            if count >= LANES:
                head = _wait_for_lane(content_type, using)
                break
            if not count:  # the model's first entry: its row for the verifications
                AuditChain.objects.using(using).bulk_create(
                    [AuditChain(content_type_id=content_type)], ignore_conflicts=True
                )
            # Another transaction may create the same lane at once: one of the two waits
            # for the other to commit, then skips it and tries the next.
            lanes.bulk_create(
                [AuditChainLane(content_type_id=content_type, lane=count)], ignore_conflicts=True
            )
            head = _free_lane(content_type, using)
        heads[content_type] = head
    return heads


def _free_lane(content_type: int, using: str) -> Head | None:
    """The lowest lane of the model that no other transaction holds, locked."""
    lanes = AuditChainLane.objects.using(using).select_for_update(skip_locked=True)
    found = (
        lanes.filter(content_type_id=content_type)
        .order_by("lane")
        .values_list("pk", "lane", "last_hash")
        .first()
    )
    return None if found is None else Head(found[0], found[1], found[2] or GENESIS)


def _wait_for_lane(content_type: int, using: str) -> Head:
    """Every lane is held: wait for one, each process and thread for its own (they spread
    over the lanes rather than all queue for the same)."""
    lane = hash((os.getpid(), threading.get_ident())) % LANES
    lanes = AuditChainLane.objects.using(using).select_for_update()
    pk, last_hash = (
        lanes.filter(content_type_id=content_type, lane=lane).values_list("pk", "last_hash").get()
    )
    return Head(pk, lane, last_hash or GENESIS)
