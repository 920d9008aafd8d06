"""Pruning and the chains: the pruned part of a chain is always its beginning, and the
hash of its last pruned entry stays on the chain's row as the anchor that verification
starts from."""

from __future__ import annotations

from collections.abc import Iterable

from auditq.models import AuditChain


def anchor(pruned: Iterable[tuple[int, int, str | None]], using: str) -> None:
    """Move the anchors past the entries just deleted: ``(id, content_type_id,
    chain_hash)`` rows, in key order, in the transaction that deleted them."""
    last: dict[int, tuple[int, str]] = {}
    for key, content_type, chain_hash in pruned:
        if chain_hash:
            last[content_type] = (key, chain_hash)
    chains = AuditChain.objects.using(using)
    for content_type, (key, chain_hash) in last.items():
        # Only the anchor's columns: a worker extending the chain meanwhile keeps its head.
        chains.filter(pk=content_type).update(anchor_entry_id=key, anchor_hash=chain_hash)
