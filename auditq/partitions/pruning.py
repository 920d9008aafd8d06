"""``auditq_prune`` on a partitioned trail: the partitions wholly before the cutoff are
detached and dropped, each in a moment, and the chains' anchors move forward."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections, transaction

from auditq.chain.anchor import Pruned
from auditq.models import AuditChainLane
from auditq.partitions.ahead import LOCK_TIMEOUT
from auditq.partitions.periods import TABLE, entries_database, listing

logger = logging.getLogger("auditq")


def drop_before(
    before: datetime.datetime,
    using: str | None = None,
    progress: Callable[[int], object] | None = None,
    attempts: int = 5,
) -> int:
    """Detach and drop every partition that lies wholly before ``before``, oldest first;
    return how many entries went with them (0 when the table is not partitioned).

    A partition holding a chained entry recorded after the first entry that stays (a
    change that reached the trail late) is left to the row-by-row prune, which keeps
    each chain's pruned part its beginning. Each drop moves the chains' anchors forward
    to the partition's last chained entry, in the transaction that drops it. A drop
    that cannot have its lock within :data:`LOCK_TIMEOUT` is tried ``attempts`` times,
    then left to the row-by-row prune.
    """
    alias = entries_database(using)
    old = [p for p in listing(alias) if p.end is not None and p.end <= before]
    if not old:
        return 0
    connection = connections[alias]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id) FROM {quote(TABLE)} WHERE occurred_at >= %s", [before])
        first_recent = cursor.fetchone()[0]
    dropped = 0
    for partition in old:
        for attempt in range(attempts):
            try:
                gone = _drop(connection, partition.name, first_recent)
                break
            except DatabaseError as exc:
                if "lock timeout" not in str(exc) or attempt == attempts - 1:
                    logger.warning(
                        "auditq: could not drop the partition %s (%s); its rows are "
                        "deleted one batch at a time",
                        partition.name,
                        str(exc).strip().splitlines()[0],
                    )
                    gone = None
                    break
                time.sleep(0.2 * 2**attempt)
        if gone is None:
            continue
        dropped += gone
        if progress is not None:
            progress(gone)
    return dropped


def _drop(connection: Any, name: str, first_recent: int | None) -> int | None:
    """Detach and drop one partition, moving the anchors; ``None``: it must stay (a late
    chained entry)."""
    quote = connection.ops.quote_name
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if first_recent is not None:
            cursor.execute(
                f"SELECT 1 FROM {quote(name)} WHERE id >= %s AND chain_hash <> '' LIMIT 1",
                [first_recent],
            )
            if cursor.fetchone():
                return None
        lanes = AuditChainLane.objects.using(connection.alias).values_list(
            "content_type_id", "lane"
        )
        last: list[Pruned] = []
        for content_type, lane in lanes:
            cursor.execute(
                f"SELECT id, chain_hash FROM {quote(name)} WHERE content_type_id = %s "
                "AND chain_lane = %s AND chain_hash <> '' ORDER BY id DESC LIMIT 1",
                [content_type, lane],
            )
            row = cursor.fetchone()
            if row:
                last.append((row[0], content_type, row[1], lane))
        cursor.execute(f"SELECT count(*) FROM {quote(name)}")
        rows = int(cursor.fetchone()[0])
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"ALTER TABLE {quote(TABLE)} DETACH PARTITION {quote(name)}")
        cursor.execute(f"DROP TABLE {quote(name)}")
        forward_anchors(last, connection.alias)
    logger.info("auditq: dropped the audit partition %s (%d entries)", name, rows)
    return rows


def forward_anchors(pruned: list[Pruned], using: str) -> None:
    """Like :func:`auditq.chain.anchor.anchor` (the :data:`~auditq.chain.anchor.Pruned`
    rows just deleted), but an anchor only ever moves forward: partitions dropped and rows
    deleted are not pruned in one key order."""
    last: dict[tuple[int, int], tuple[int, str]] = {}
    for key, content_type, chain_hash, lane in pruned:
        if chain_hash and key > last.get((content_type, lane), (0, ""))[0]:
            last[content_type, lane] = (key, chain_hash)
    lanes = AuditChainLane.objects.using(using)
    for (content_type, lane), (key, chain_hash) in last.items():
        lanes.filter(content_type_id=content_type, lane=lane).exclude(
            anchor_entry_id__gte=key
        ).update(anchor_entry_id=key, anchor_hash=chain_hash)
