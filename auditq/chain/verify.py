"""The checking side: recompute the chains and say where the first break is.

One pass over the entries in key order (a server-side cursor on PostgreSQL, so memory
stays flat), in one snapshot with the lanes' heads: the entries a worker records
meanwhile are not seen, nor is the head they move. Per lane of each model's chain, the
walk starts from the lane's prune anchor (or from nothing), and each entry's hash must be
the one recomputed from its content and the hash before it in its lane. Entries recorded
before the model's chain started (before the migration that added chaining) are counted
as not chained, not as breaks; an unchained entry after the start is a break. At the end
each lane must arrive at its head: a missing last entry, or entries added after it, are
breaks too. A model's result is its lanes' together: its first break is the lowest entry
where one of its lanes breaks.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from celery import shared_task
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, connections, models, router, transaction
from django.utils import timezone

from auditq.backends import backend
from auditq.chain.canonical import GENESIS, entry_hash
from auditq.models import AuditChain, AuditChainLane, AuditEntry

logger = logging.getLogger("auditq")

CHUNK = 5000
"""Rows fetched per round trip."""

COLUMNS = (
    "id",
    "content_type_id",
    "event_id",
    "object_pk",
    "object_repr",
    "action",
    "changes",
    "actor_id",
    "actor_repr",
    "remote_addr",
    "request_id",
    "context",
    "occurred_at",
    "recorded_at",
    "chain_hash",
)
"""The columns read: the hashed content between the key and the stored hash."""


@dataclass
class ChainResult:
    """What the check found in one model's chain."""

    content_type_id: int
    """The chain's model (its content type)."""
    model: str
    """``app_label.modelname``."""
    verified: int = 0
    """Entries whose hash was recomputed and found right."""
    unchained: int = 0
    """Entries recorded before the chain started."""
    broken_entry_id: int | None = None
    """The first entry where the chain breaks; ``None``: intact."""
    problem: str = ""
    """Why it breaks there, in a sentence."""

    @property
    def intact(self) -> bool:
        return self.broken_entry_id is None

    def describe(self) -> str:
        """One line: the model, and intact or where it breaks."""
        if self.intact:
            unchained = f", {self.unchained} older not chained" if self.unchained else ""
            return f"{self.model}: intact ({self.verified} entries{unchained})"
        return f"{self.model}: broken at entry {self.broken_entry_id}: {self.problem}"


@dataclass
class _Walk:
    """One lane's state during the pass."""

    expected: str
    after: int
    head_hash: str
    head_entry_id: int | None
    started: bool
    verified: int = 0
    unchained: int = 0
    broken_entry_id: int | None = None
    problem: str = ""
    beyond_head: int | None = None


@dataclass
class _Model:
    """One model's lanes during the pass."""

    result: ChainResult
    lanes: dict[int, _Walk]
    started: bool = False
    """A lane of the model has a chained entry (or an anchor) before the current one."""
    broken: bool = False
    """A lane broke: the model's later entries are not checked."""


def verify(
    using: str = DEFAULT_DB_ALIAS,
    content_type: ContentType | None = None,
    since: datetime.datetime | None = None,
    progress: Callable[[int], object] | None = None,
    store: bool = True,
) -> list[ChainResult]:
    """Recompute the chains (one model's, with ``content_type``) and return one result
    per chain; with ``store``, keep each on its ``AuditChain`` row for the admin.

    ``since``: check only each chain's entries from its first that occurred at or after
    that time, taking the hash before it on trust. ``progress`` is called with the
    number of entries read, every :data:`CHUNK`.
    """
    connection = connections[using]
    outer = connection.in_atomic_block  # then its snapshot, whatever its isolation
    with transaction.atomic(using=using):
        found = backend(connection)
        if found.supports_snapshot_isolation and not outer:
            found.read_one_snapshot(connection)
        chains = _start(using, content_type, since)
        # One model's walk may start past its anchors; a whole pass reads every entry.
        first = 0
        if content_type and chains:
            first = min(walk.after for chain in chains.values() for walk in chain.lanes.values())
        read = 0
        for row in _rows(using, content_type, first):
            key = row["content_type_id"]
            chain = chains.get(key)
            if chain is None:
                chain = chains[key] = _Model(ChainResult(key, _label(key, using)), {})
            walk = chain.lanes.get(row["chain_lane"])
            if walk is None:
                walk = chain.lanes[row["chain_lane"]] = _new_walk()
            _step(chain, walk, row)
            read += 1
            if progress is not None and read == CHUNK:
                progress(read)
                read = 0
        if progress is not None and read:
            progress(read)
        results = [_finish(chain) for chain in chains.values()]
    results.sort(key=lambda result: result.model)
    if store:
        _store(results, using)
    return results


def _start(
    using: str, content_type: ContentType | None, since: datetime.datetime | None
) -> dict[int, _Model]:
    """Where each known lane's walk starts: its anchor, or the entry before ``since``."""
    lanes = AuditChainLane.objects.using(using).order_by("content_type_id", "lane")
    if content_type is not None:
        lanes = lanes.filter(content_type=content_type)
    chains: dict[int, _Model] = {}
    for lane in lanes:
        key = lane.content_type_id
        chain = chains.get(key)
        if chain is None:
            chain = chains[key] = _Model(ChainResult(key, _label(key, using)), {})
        chain.lanes[lane.lane] = _Walk(
            expected=lane.anchor_hash or GENESIS,
            after=lane.anchor_entry_id or 0,
            head_hash=lane.last_hash,
            head_entry_id=lane.last_entry_id,
            started=bool(lane.anchor_hash),
        )
    if since is not None:
        for key, chain in chains.items():
            for number, walk in chain.lanes.items():
                _start_since(walk, key, number, since, using)
    for chain in chains.values():
        chain.started = any(walk.started and walk.expected for walk in chain.lanes.values())
    return chains


def _start_since(
    walk: _Walk, content_type: int, lane: int, since: datetime.datetime, using: str
) -> None:
    """Start the lane's walk at its first entry that occurred at or after ``since``,
    from the hash of the entry before it in the lane."""
    entries = AuditEntry.objects.using(using).filter(content_type_id=content_type, chain_lane=lane)
    first = entries.filter(occurred_at__gte=since).order_by("id").first()
    if first is None:
        walk.after = walk.head_entry_id or walk.after
        walk.expected, walk.started = walk.head_hash, True
        return
    before = entries.filter(id__lt=first.pk, id__gt=walk.after).order_by("-id").first()
    if before is not None and before.chain_hash:
        walk.after, walk.expected, walk.started = before.pk, before.chain_hash, True


def _new_walk() -> _Walk:
    """A lane with entries and no row: recorded before chaining (or forged)."""
    return _Walk(expected=GENESIS, after=0, head_hash="", head_entry_id=None, started=False)


def _step(chain: _Model, walk: _Walk, row: dict[str, Any]) -> None:
    key = row["id"]
    if chain.broken or key <= walk.after:
        return
    head = walk.head_entry_id
    if walk.beyond_head is None and (head is None or key > head):
        walk.beyond_head = key
    stored = row["chain_hash"]
    if not stored:
        if walk.started or chain.started:
            _break(chain, walk, key, "it has no hash, but the chain had started before it")
        else:
            walk.unchained += 1
        return
    if entry_hash(walk.expected, row) != stored:
        _break(
            chain,
            walk,
            key,
            "its hash does not match its content and the hash before it in its lane (it "
            "was edited, or an entry before it was deleted or inserted)",
        )
        return
    walk.expected, walk.started, chain.started = stored, True, True
    walk.verified += 1


def _finish(chain: _Model) -> ChainResult:
    """Check that each unbroken lane arrives at its head; sum up the model's lanes."""
    result = chain.result
    broke_on_the_way = chain.broken
    for number, walk in sorted(chain.lanes.items()):
        if not broke_on_the_way and walk.expected != (walk.head_hash or GENESIS):
            if walk.beyond_head is not None:
                _break(chain, walk, walk.beyond_head, "it comes after its lane's last entry")
            else:
                last = walk.head_entry_id or 0
                _break(chain, walk, last, f"entry {last}, the last of lane {number}, is missing")
        result.verified += walk.verified
        result.unchained += walk.unchained
        broken = walk.broken_entry_id
        if broken is not None and (
            result.broken_entry_id is None or broken < result.broken_entry_id
        ):
            result.broken_entry_id, result.problem = broken, walk.problem
    return result


def _break(chain: _Model, walk: _Walk, key: int, problem: str) -> None:
    chain.broken = True
    walk.broken_entry_id = key
    walk.problem = problem


def _rows(using: str, content_type: ContentType | None, after: int) -> Iterator[dict[str, Any]]:
    """The entries in key order, as the database stores them (a plain cursor: no model
    instances, JSON decoded once by the hashing)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(AuditEntry._meta.db_table)
    names = (*COLUMNS, "chain_lane")
    sql = f"SELECT {', '.join(quote(name) for name in names)} FROM {table} WHERE id > %s"
    params: list[Any] = [after]
    if content_type is not None:
        sql += f" AND {quote('content_type_id')} = %s"
        params.append(content_type.pk)
    actor = _actor_key()
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql + " ORDER BY id", params)
        while rows := cursor.fetchmany(CHUNK):
            for values in rows:
                row = dict(zip(names, values, strict=True))
                if row["actor_id"] is not None:
                    row["actor_id"] = actor(row["actor_id"])
                yield row


def _actor_key() -> Callable[[Any], Any]:
    """The actor key as the worker had it (SQLite stores a UUID key as bare hex)."""
    target = AuditEntry._meta.get_field("actor").target_field
    if isinstance(target, models.UUIDField):
        return target.to_python
    return lambda value: value


def _label(content_type_id: int, using: str) -> str:
    # The entries' database's own content types (its keys are its own).
    found = ContentType.objects.db_manager(using).get_for_id(content_type_id)
    return f"{found.app_label}.{found.model}"


def _store(results: list[ChainResult], using: str) -> None:
    """Keep each chain's verdict on its row (created for a model that has none yet)."""
    now = timezone.now()
    for result in results:
        AuditChain.objects.using(using).update_or_create(
            content_type_id=result.content_type_id,
            defaults={
                "verified_at": now,
                "verified_entries": result.verified,
                "unchained_entries": result.unchained,
                "broken_entry_id": result.broken_entry_id,
                "problem": result.problem,
            },
        )


@shared_task(name="auditq.tasks.verify", ignore_result=True, store_errors_even_if_ignored=True)
def verify_task(using: str | None = None) -> int:
    """Check every chain (schedule it with beat) in ``using`` (``None``: the database the
    routers give the entries); return how many are broken.

    Logs each chain's heads (its lanes' last hashes) at INFO: kept by a log service
    outside the database, those lines let a later check prove the chain it finds is the
    one it was then. A break is logged at ERROR.
    """
    using = using or router.db_for_read(AuditEntry)
    results = verify(using)
    heads: dict[int, list[str]] = {}
    lanes = AuditChainLane.objects.using(using).exclude(last_hash="").order_by("lane")
    for content_type, lane, last_hash in lanes.values_list("content_type_id", "lane", "last_hash"):
        heads.setdefault(content_type, []).append(f"{lane}:{last_hash}")
    for result in results:
        if result.intact:
            logger.info(
                "auditq: chain %s intact, heads %s",
                result.model,
                " ".join(heads.get(result.content_type_id, [])) or "none",
            )
        else:
            logger.error("auditq: chain %s", result.describe())
    return sum(not result.intact for result in results)
