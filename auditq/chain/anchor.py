"""Pruning and the chains: the pruned part of a lane is always its beginning, and the
hash of its last pruned entry stays on the lane's row as the anchor that verification
starts from."""

from __future__ import annotations

from collections.abc import Iterable

from auditq.models import AuditChainLane

Pruned = tuple[int, int, str | None, int]
"""A deleted entry's ``(id, content_type_id, chain_hash, chain_lane)``."""


def anchor(pruned: Iterable[Pruned], using: str) -> None:
    """Move the anchors past the entries just deleted (:data:`Pruned` rows, in key
    order, in the transaction that deleted them)."""
    last: dict[tuple[int, int], tuple[int, str]] = {}
    for key, content_type, chain_hash, lane in pruned:
        if chain_hash:
            last[content_type, lane] = (key, chain_hash)
    lanes = AuditChainLane.objects.using(using)
    for (content_type, lane), (key, chain_hash) in last.items():
        # Only the anchor's columns: a worker extending the lane meanwhile keeps its head.
        lanes.filter(content_type_id=content_type, lane=lane).update(
            anchor_entry_id=key, anchor_hash=chain_hash
        )
