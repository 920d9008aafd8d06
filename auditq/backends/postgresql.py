"""PostgreSQL: the outbox row in the row's own statement or beside the ``COMMIT``,
``NOTIFY`` to wake an idle relay, ``SKIP LOCKED`` claims, and JSON batch inserts."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from auditq.backends.base import OUTBOX_TABLE, Backend, Taken

PUT = "auditq_outbox_put"
"""The function that writes one outbox row and sends ``NOTIFY`` when a relay waits for
one (migrations 0002, 0008, 0009 and 0016 create it)."""
CHANNEL = "auditq_outbox"
"""The channel ``auditq_outbox_put`` notifies."""
IDLE = "auditq_relay_idle"
"""The sequence whose ``is_called`` is false while a relay waits: the first commit that
sees it so sets it (``nextval``) and notifies (migration 0016)."""


class PostgreSQLBackend(Backend):
    vendor = "postgresql"
    supports_statement_outbox = True
    supports_notify = True
    supports_locking_statements = True
    supports_json_rows = True
    supports_row_estimate = True
    supports_snapshot_isolation = True

    @staticmethod
    def _put(*, key_sql: str | None = None, notify: bool = True) -> str:
        """The call of :data:`PUT` on a payload parameter (and ``key_sql``, SQL giving the
        key the database assigned), without its ``NOTIFY`` when ``notify`` is off."""
        key = f", {key_sql}" if key_sql else ""
        return f"{PUT}(%s{key}{'' if notify else ', notify => false'})"

    def write_outbox(self, connection: Any, payload: str, *, commit: bool, notify: bool) -> None:
        # The COMMIT travels with the row (one round trip; Django's own commit then finds
        # nothing left to commit), except under server-side binding: a prepared statement
        # holds one command.
        together = commit and not connection.features.uses_server_side_binding
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {self._put(notify=notify)}" + ("; COMMIT" if together else ""),
                [payload],
            )

    def with_outbox_put(
        self, sql: str, params: Any, payload: str, *, key_sql: str | None, notify: bool
    ) -> tuple[str, list[Any]]:
        call = self._put(key_sql=key_sql, notify=notify)
        params = [*(params or ()), payload]
        if sql.startswith("INSERT") and " RETURNING " in sql:
            return f"{sql}, {call}", params
        return f"{sql} RETURNING {call}", params

    def take_outbox(self, connection: Any, ids: list[int]) -> list[Taken]:
        # One statement locks, reads and deletes (waiting for rows another worker holds).
        return self._returned(
            connection,
            f"DELETE FROM {OUTBOX_TABLE} WHERE id = ANY(%s) AND failed_at IS NULL "
            "RETURNING id, payload, key",
            [sorted(ids)],
        )

    def take_fresh_outbox(self, connection: Any, limit: int) -> list[Taken]:
        return self._returned(
            connection,
            f"DELETE FROM {OUTBOX_TABLE} WHERE id IN (SELECT id FROM {OUTBOX_TABLE} "
            "WHERE relayed_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) "
            "RETURNING id, payload, key",
            [limit],
        )

    def claim_outbox(self, connection: Any, limit: int, *, fresh: bool, cutoff: Any) -> list[int]:
        where, params = (
            ("relayed_at IS NULL", [])
            if fresh
            else ("created_at <= %s AND (relayed_at IS NULL OR relayed_at <= %s)", [cutoff] * 2)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {OUTBOX_TABLE} SET relayed_at = %s WHERE id IN (SELECT id FROM "
                f"{OUTBOX_TABLE} WHERE ({where}) AND failed_at IS NULL ORDER BY id LIMIT %s "
                "FOR UPDATE SKIP LOCKED) "
                "RETURNING id",
                [timezone.now(), *params, limit],
            )
            return sorted(row[0] for row in cursor.fetchall())

    @staticmethod
    def _returned(connection: Any, sql: str, params: list[Any]) -> list[Taken]:
        """The rows a ``DELETE … RETURNING`` gave back, in key order. Built by hand: a
        model instance per row costs more than the rest of the row's delivery."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        rows.sort()
        return [Taken(*row) for row in rows]

    def insert_json_rows(
        self,
        connection: Any,
        table: str,
        columns: list[tuple[str, str]],
        rows: str,
        *,
        unique: str,
        now: str,
    ) -> None:
        # One statement for the whole batch: the server unpacks the JSON document
        # (jsonb_to_recordset), several times faster than bulk_create. ON CONFLICT names
        # no target: the table's unique index on `unique` serves, alone or with the
        # partition key (a partitioned trail is unique on (event_id, occurred_at)).
        quote = connection.ops.quote_name
        names = ", ".join(quote(name) for name, _ in columns)
        typed = ", ".join(f"{quote(name)} {kind}" for name, kind in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {quote(table)} ({names}, {quote(now)}) "
                f"SELECT {names}, clock_timestamp() FROM jsonb_to_recordset(%s::jsonb) "
                f"AS r({typed}) ON CONFLICT DO NOTHING",
                [rows],
            )

    def insert_chained_rows(
        self,
        connection: Any,
        table: str,
        columns: list[tuple[str, str]],
        rows: str,
        *,
        unique: str,
        chains: str,
        heads: str,
    ) -> set[Any]:
        # The entries and their lanes' heads in one statement: each head moves to the
        # hash given and to the last key the insert drew for its model (a batch holds one
        # lane of each of its models). ON CONFLICT names no target, as in insert_json_rows.
        quote = connection.ops.quote_name
        names = ", ".join(quote(name) for name, _ in columns)
        typed = ", ".join(f"{quote(name)} {kind}" for name, kind in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH new AS (INSERT INTO {quote(table)} ({names}) "
                f"SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS r({typed}) "
                "ON CONFLICT DO NOTHING "
                f"RETURNING id, content_type_id, {quote(unique)}), "
                f"moved AS (UPDATE {quote(chains)} AS c SET last_hash = h.last_hash, "
                "last_entry_id = coalesce((SELECT max(new.id) FROM new "
                "WHERE new.content_type_id = c.content_type_id), c.last_entry_id) "
                "FROM jsonb_to_recordset(%s::jsonb) AS h(id bigint, last_hash text) "
                f"WHERE c.id = h.id) SELECT {quote(unique)} FROM new",
                [rows, heads],
            )
            return {row[0] for row in cursor.fetchall()}

    def keys_where(
        self, connection: Any, table: str, column: str, keys: list[int]
    ) -> tuple[str, list[Any]] | None:
        quote = connection.ops.quote_name
        return f"{quote(table)}.{quote(column)} = ANY(%s)", [keys]

    def estimate_rows(self, connection: Any, table: str) -> int | None:
        # A partitioned table's own reltuples stays -1: the sum of its leaf partitions'.
        # -1: a table never analysed, left out; none analysed: no estimate.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce((SELECT sum(p.reltuples) FROM pg_partition_tree(c.oid) t "
                "JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf AND p.reltuples >= 0), "
                "CASE WHEN c.relkind <> 'p' AND c.reltuples >= 0 THEN c.reltuples END)::bigint "
                "FROM pg_class c WHERE c.oid = to_regclass(%s)",
                [connection.ops.quote_name(table)],
            )
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def read_one_snapshot(self, connection: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def listen(self, connection: Any) -> Any:
        import psycopg  # only here: psycopg is the postgres extra's, not a dependency

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        listener = psycopg.connect(**params, autocommit=True)
        listener.execute(f"LISTEN {CHANNEL}")
        return listener

    def want_notify(self, listener: Any) -> None:
        # Outside any transaction: the next commit sees it at once, whatever its isolation.
        # Written only when no other relay (or earlier round) set it already: setval is a
        # write, flushed at commit, and an idle relay asks at each poll.
        listener.execute(f"SELECT setval('{IDLE}', 1, false) FROM {IDLE} WHERE is_called")
