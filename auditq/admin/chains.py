"""The hash chains as the admin shows them: the last verification on the dashboard, and
a mark on every entry recorded at or after a chain's first break (one small query per
page: a row per audited model)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from auditq.models import AuditChain, AuditEntry


@dataclass(frozen=True)
class Verification:
    """The last ``auditq_verify`` (or ``auditq.tasks.verify``) of each chain."""

    last: datetime.datetime | None
    """When the most recent check ran; ``None``: never."""
    checked: int
    """Chains checked."""
    broken: tuple[AuditChain, ...]
    """The chains it found broken."""

    @property
    def level(self) -> str:
        if self.broken:
            return "alert"
        return "ok" if self.last is not None else "warn"


def verification() -> Verification:
    """The chains' last verdicts."""
    chains = list(
        AuditChain.objects.filter(verified_at__isnull=False).select_related("content_type")
    )
    return Verification(
        last=max((chain.verified_at for chain in chains if chain.verified_at), default=None),
        checked=len(chains),
        broken=tuple(chain for chain in chains if chain.broken_entry_id is not None),
    )


def breaks(using: str | None = None) -> dict[int, int]:
    """``{content type id: first broken entry id}`` of the chains found broken."""
    broken = AuditChain.objects.using(using).filter(broken_entry_id__isnull=False)
    return dict(broken.values_list("content_type_id", "broken_entry_id"))  # type: ignore[arg-type]


def after_break(entry: AuditEntry, found: dict[int, int]) -> bool:
    """Whether ``entry`` was recorded at or after its chain's first break."""
    first = found.get(entry.content_type_id)
    return first is not None and entry.pk >= first


def mark_column(found: dict[int, int]) -> object:
    """The changelist column that marks the entries after a break."""

    @admin.display(description="chain")
    def chain_mark(entry: AuditEntry) -> SafeString | str:
        if not after_break(entry, found):
            return ""
        return format_html(
            '<span class="auditq-broken" title="{}">after a break</span>',
            f"the last verification found this chain broken at entry "
            f"{found[entry.content_type_id]}: this entry cannot be trusted",
        )

    return chain_mark


def describe(entry: AuditEntry) -> str:
    """The detail page's line on the entry's place in its chain."""
    if not entry.chain_hash:
        return "not chained (recorded before chaining, or with chaining off)"
    found = breaks(entry._state.db)
    if after_break(entry, found):
        return (
            f"AFTER A BREAK: the last verification found this chain broken at entry "
            f"{found[entry.content_type_id]}; hash {entry.chain_hash}"
        )
    return f"hash {entry.chain_hash}"
