"""Helpers for the tests of a partitioned trail: the test database's table is converted
inside the test (and converted back, or rolled back with the test's transaction)."""

from __future__ import annotations

import datetime

from django.db import connection

from auditq import chain, partitions
from auditq.consumers import audit

UTC = datetime.UTC


def partition_of(entry_id: int) -> str:
    """The partition that holds an entry."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM auditq_auditentry WHERE id = %s", [entry_id]
        )
        return cursor.fetchone()[0]


def indexes_of(table: str) -> dict[str, str]:
    """``{index name: definition}`` of a table, as pg_indexes has them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return dict(cursor.fetchall())


def shape(definition: str) -> str:
    """An index's definition without its name and table: what it indexes, and how."""
    return definition.split(" USING ", 1)[1]


def record(*rows: dict) -> None:
    """Record rows, chained, in one batch, as the worker does."""
    chain.extend([dict(r) for r in rows], "default", audit._insert)


def unconvert() -> None:
    """Put back the table :func:`auditq.partitions.convert` kept (``keep_old``), for a
    test whose transaction commits: the partitioned table goes, with its rows."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) "
            "AND contype IN ('p', 'u')",
            [partitions.OLD],
        )
        keys = [name for (name,) in cursor.fetchall()]
        cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint "
            "WHERE conindid = i.indexrelid)",
            [partitions.OLD],
        )
        indexes = [name for (name,) in cursor.fetchall()]
        cursor.execute(f"DROP TABLE {quote(partitions.TABLE)}")
        cursor.execute(f"ALTER TABLE {quote(partitions.OLD)} RENAME TO {quote(partitions.TABLE)}")
        for name in keys:
            cursor.execute(
                f"ALTER TABLE {quote(partitions.TABLE)} RENAME CONSTRAINT {quote(name)} "
                f"TO {quote(name.removesuffix('_old'))}"
            )
        for name in indexes:
            cursor.execute(
                f"ALTER INDEX {quote(name)} RENAME TO {quote(name.removesuffix('_old'))}"
            )


def check_pending() -> None:
    """Run the foreign-key checks Django defers to the commit: rows written in the test's
    own transaction keep a partition from being dropped until they ran (a real prune
    runs in transactions of its own, after the rows' commits)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
