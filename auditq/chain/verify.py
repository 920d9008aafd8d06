"""The checking side: recompute the chains and say where the first break is.

One pass over the entries in key order (a server-side cursor on PostgreSQL, so memory
stays flat), in one snapshot with the chains' heads: the entries a worker records
meanwhile are not seen, nor is the head they move. Per chain, the walk starts from the
prune anchor (or from nothing), and each entry's hash must be the one recomputed from
its content and the hash before it. Entries recorded before the chain started (before
the migration that added chaining) are counted as not chained, not as breaks; an
unchained entry after the start is a break. At the end each chain must arrive at its
head: a missing last entry, or entries added after it, are breaks too.
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
from auditq.models import AuditChain, AuditEntry

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
    """One chain's state during the pass."""

    result: ChainResult
    expected: str
    after: int
    head_hash: str
    head_entry_id: int | None
    started: bool
    beyond_head: int | None = None


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
        walks = _start(using, content_type, since)
        # One model's walk may start past its anchor; a whole pass reads every entry.
        first = min(walk.after for walk in walks.values()) if content_type and walks else 0
        read = 0
        for row in _rows(using, content_type, first):
            walk = walks.get(row["content_type_id"])
            if walk is None:
                walk = walks[row["content_type_id"]] = _new_walk(row["content_type_id"], using)
            _step(walk, row)
            read += 1
            if progress is not None and read == CHUNK:
                progress(read)
                read = 0
        if progress is not None and read:
            progress(read)
        results = [_finish(walk) for walk in walks.values()]
    results.sort(key=lambda result: result.model)
    if store:
        _store(results, using)
    return results


def _start(
    using: str, content_type: ContentType | None, since: datetime.datetime | None
) -> dict[int, _Walk]:
    """Where each known chain's walk starts: its anchor, or the entry before ``since``."""
    chains = AuditChain.objects.using(using)
    if content_type is not None:
        chains = chains.filter(content_type=content_type)
    walks = {}
    for chain in chains:
        walks[chain.pk] = _Walk(
            ChainResult(chain.pk, _label(chain.pk, using)),
            expected=chain.anchor_hash or GENESIS,
            after=chain.anchor_entry_id or 0,
            head_hash=chain.last_hash,
            head_entry_id=chain.last_entry_id,
            started=bool(chain.anchor_hash),
        )
    if since is not None:
        for key, walk in walks.items():
            entries = AuditEntry.objects.using(using).filter(content_type_id=key)
            first = entries.filter(occurred_at__gte=since).order_by("id").first()
            if first is None:
                walk.after = walk.head_entry_id or walk.after
                walk.expected, walk.started = walk.head_hash, True
                continue
            before = entries.filter(id__lt=first.pk, id__gt=walk.after).order_by("-id").first()
            if before is not None and before.chain_hash:
                walk.after, walk.expected, walk.started = before.pk, before.chain_hash, True
    return walks


def _new_walk(content_type_id: int, using: str) -> _Walk:
    """A model with entries and no chain: all recorded before chaining (or forged)."""
    return _Walk(
        ChainResult(content_type_id, _label(content_type_id, using)),
        expected=GENESIS,
        after=0,
        head_hash="",
        head_entry_id=None,
        started=False,
    )


def _step(walk: _Walk, row: dict[str, Any]) -> None:
    result = walk.result
    key = row["id"]
    if result.broken_entry_id is not None or key <= walk.after:
        return
    head = walk.head_entry_id
    if walk.beyond_head is None and (head is None or key > head):
        walk.beyond_head = key
    stored = row["chain_hash"]
    if not stored:
        if walk.started:
            _break(walk, key, "it has no hash, but the chain had started before it")
        else:
            result.unchained += 1
        return
    if entry_hash(walk.expected, row) != stored:
        _break(
            walk,
            key,
            "its hash does not match its content and the hash before it (it was edited, "
            "or an entry before it was deleted or inserted)",
        )
        return
    walk.expected, walk.started = stored, True
    result.verified += 1


def _finish(walk: _Walk) -> ChainResult:
    """Check that an unbroken chain arrives at its head."""
    result = walk.result
    if result.broken_entry_id is None and walk.expected != (walk.head_hash or GENESIS):
        if walk.beyond_head is not None:
            _break(walk, walk.beyond_head, "it comes after the chain's last recorded entry")
        else:
            last = walk.head_entry_id or 0
            _break(walk, last, f"entry {last}, the chain's last, is missing")
    return result


def _break(walk: _Walk, key: int, problem: str) -> None:
    walk.result.broken_entry_id = key
    walk.result.problem = problem


def _rows(using: str, content_type: ContentType | None, after: int) -> Iterator[dict[str, Any]]:
    """The entries in key order, as the database stores them (a plain cursor: no model
    instances, JSON decoded once by the hashing)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(AuditEntry._meta.db_table)
    sql = f"SELECT {', '.join(quote(name) for name in COLUMNS)} FROM {table} WHERE id > %s"
    params: list[Any] = [after]
    if content_type is not None:
        sql += f" AND {quote('content_type_id')} = %s"
        params.append(content_type.pk)
    actor = _actor_key()
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql + " ORDER BY id", params)
        while rows := cursor.fetchmany(CHUNK):
            for values in rows:
                row = dict(zip(COLUMNS, values, strict=True))
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

    Logs each chain's head hash at INFO: kept by a log service outside the database,
    those lines let a later check prove the chain it finds is the one it was then.
    A break is logged at ERROR.
    """
    using = using or router.db_for_read(AuditEntry)
    results = verify(using)
    heads = dict(AuditChain.objects.using(using).values_list("pk", "last_hash"))
    for result in results:
        if result.intact:
            logger.info(
                "auditq: chain %s intact, head %s", result.model, heads.get(result.content_type_id)
            )
        else:
            logger.error("auditq: chain %s", result.describe())
    return sum(not result.intact for result in results)
