"""PostgreSQL: the audit entries' table range-partitioned by ``occurred_at``.

With ``AUDITQ["PARTITION"]`` (``"month"``, ``"week"`` or ``"day"``; periods in UTC, weeks
from Monday) ``auditq_auditentry`` is a partitioned table: one partition per period
(``auditq_auditentry_p2026_12``, ``…_p2026w49``, ``…_p2026_12_06``) and a default
partition (``auditq_auditentry_default``) that takes any change whose period has no
partition yet, so nothing is ever refused.

- Exactly once: a unique index of a partitioned table must hold its partition key, so
  the table is unique on ``(event_id, occurred_at)`` (and keyed on ``(id,
  occurred_at)``). An event's ``occurred_at`` is fixed when the change is captured and
  travels in its payload: every delivery of it lands in the same partition, where the
  index refuses the second one. The recording ``INSERT … ON CONFLICT DO NOTHING`` names
  no target, so it is served by whichever unique index the table has.
- Every index is declared on the parent, so PostgreSQL builds it on each partition,
  present and future (the pg_trgm search indexes too).
- ``ahead``: partitions are made ahead (the current period and :data:`AHEAD` more) by
  :func:`upkeep`, a relay sweeper run at most once an hour per process, by
  ``auditq_relay``, and by ``auditq_partitions --create``. A new partition is made as a
  table of its own and then attached, which locks the parent only in SHARE UPDATE
  EXCLUSIVE mode: reads and writes of the trail go on.
- ``pruning``: ``auditq_prune`` detaches and drops the partitions that lie wholly
  before its cutoff (:func:`drop_before`).
- ``conversion``: an existing table, with its rows, becomes partitioned (:func:`convert`):
  the new table is built beside it, filled in batches, and swapped in under a short
  exclusive lock.
- ``periods``: the periods, the partitions' names, and what the database holds.
"""

from auditq.partitions.ahead import AHEAD, LOCK_TIMEOUT, create, ensure, upkeep
from auditq.partitions.conversion import BUILDING, OLD, SEQUENCE, Conversion, convert
from auditq.partitions.periods import (
    DEFAULT,
    TABLE,
    UTC,
    Partition,
    entries_database,
    is_partitioned,
    listing,
    next_start,
    partition_name,
    period_start,
)
from auditq.partitions.pruning import drop_before, forward_anchors

__all__ = [
    "AHEAD",
    "BUILDING",
    "DEFAULT",
    "LOCK_TIMEOUT",
    "OLD",
    "SEQUENCE",
    "TABLE",
    "UTC",
    "Conversion",
    "Partition",
    "convert",
    "create",
    "drop_before",
    "ensure",
    "entries_database",
    "forward_anchors",
    "is_partitioned",
    "listing",
    "next_start",
    "partition_name",
    "period_start",
    "upkeep",
]
