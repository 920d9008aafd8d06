"""The portable backend (SQLite, and any other database): what every database does, in
plain SQL, and the flags that say which faster ways a database has."""

from __future__ import annotations

from typing import Any, NamedTuple

from django.utils import timezone

OUTBOX_TABLE = "auditq_outbox"
"""The outbox table (``auditq.models.Outbox``): the one table auditq writes on the
request path."""


class Taken(NamedTuple):
    """An outbox row taken for delivery: its id, payload and assigned key (parsing its
    dates would cost more than they are worth; a row put back is dated anew)."""

    pk: int
    payload: str
    key: str


class Backend:
    """A database as auditq uses it. Methods behind a ``supports_*`` flag raise
    ``NotImplementedError`` where the flag is ``False``."""

    vendor = "portable"

    supports_statement_outbox = False
    """A lone save's own ``INSERT``/``UPDATE``/``DELETE`` writes its outbox row
    (:meth:`with_outbox_put`): no transaction block, one round trip."""
    supports_notify = False
    """A commit that wrote outbox rows wakes a relay that waits for it (:meth:`listen`,
    :meth:`want_notify`)."""
    supports_locking_statements = False
    """One statement picks, locks (``SKIP LOCKED``) and stamps or deletes outbox rows
    (:meth:`claim_outbox`, :meth:`take_fresh_outbox`); otherwise the ORM does it in a
    transaction."""
    supports_json_rows = False
    """A batch of rows inserts as one JSON document the server unpacks
    (:meth:`insert_json_rows`, :meth:`insert_chained_rows`); otherwise ``bulk_create``."""
    supports_row_estimate = False
    """The server keeps a row estimate per table (:meth:`estimate_rows`)."""
    supports_snapshot_isolation = False
    """A transaction can read one snapshot throughout (:meth:`read_one_snapshot`)."""

    def write_outbox(self, connection: Any, payload: str, *, commit: bool, notify: bool) -> None:
        """Write one outbox row holding ``payload`` in the open transaction.

        ``commit``: the caller commits right after; a backend may send the ``COMMIT``
        with the row. ``notify``: wake the relay, where the backend can.
        """
        table = connection.ops.quote_name(OUTBOX_TABLE)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (created_at, payload) VALUES (%s, %s)", [now, payload]
            )

    def take_outbox(self, connection: Any, ids: list[int]) -> list[Taken]:
        """Delete the rows ``ids`` and return them in key order, in the open transaction
        (one lock order for every worker: no deadlocks). Set-aside rows stay."""
        table = connection.ops.quote_name(OUTBOX_TABLE)
        ids = sorted(ids)
        marks = ", ".join(["%s"] * len(ids))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, payload, key FROM {table} WHERE id IN ({marks}) "
                "AND failed_at IS NULL ORDER BY id",
                ids,
            )
            rows = [Taken(*row) for row in cursor.fetchall()]
            if rows:
                found = [row.pk for row in rows]
                cursor.execute(
                    f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(found))})", found
                )
        return rows

    def take_fresh_outbox(self, connection: Any, limit: int) -> list[Taken]:
        """Delete and return up to ``limit`` never-published rows, skipping locked and
        set-aside ones."""
        raise NotImplementedError

    def claim_outbox(self, connection: Any, limit: int, *, fresh: bool, cutoff: Any) -> list[int]:
        """Stamp up to ``limit`` due rows (never set-aside ones) as published now; return
        their keys."""
        raise NotImplementedError

    def with_outbox_put(
        self, sql: str, params: Any, payload: str, *, key_sql: str | None, notify: bool
    ) -> tuple[str, list[Any]]:
        """``sql`` made to write its outbox row (``RETURNING``), and its parameters."""
        raise NotImplementedError

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
        """Insert ``rows`` (a JSON array of objects) into ``table``, in their order (a
        serial key follows it); ``columns`` are ``(name, SQL type)``; rows whose
        ``unique`` column exists are skipped; column ``now`` gets the server's clock."""
        raise NotImplementedError

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
        """:meth:`insert_json_rows` of audit entries (no ``now`` column), and in the same
        statement move the heads of their lanes in table ``chains``: ``heads`` is a
        JSON array of ``{"id", "last_hash"}`` (one lane of each model in ``rows``), and
        each head's ``last_entry_id`` becomes the last key drawn for its model. Returns the
        ``unique`` values of the rows inserted (a row skipped is not among them)."""
        raise NotImplementedError

    def keys_where(
        self, connection: Any, table: str, column: str, keys: list[int]
    ) -> tuple[str, list[Any]] | None:
        """A ``WHERE`` clause matching the integer ``keys`` of ``column`` with one
        parameter, whatever their number; ``None``: filter with ``IN (...)`` in batches."""
        return None

    def estimate_rows(self, connection: Any, table: str) -> int | None:
        """The server's estimate of the table's rows; ``None`` if it has none."""
        return None

    def read_one_snapshot(self, connection: Any) -> None:
        """Make the open transaction read one snapshot of the database throughout."""
        raise NotImplementedError

    def listen(self, connection: Any) -> Any:
        """A new connection that receives the outbox's notifications."""
        raise NotImplementedError

    def want_notify(self, listener: Any) -> None:
        """Ask the next commit that writes an outbox row to notify ``listener`` (a
        connection from :meth:`listen`); commits notify nobody until a relay asks."""
        raise NotImplementedError
