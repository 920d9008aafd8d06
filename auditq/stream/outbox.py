"""The transaction's one outbox row: written with the change, never without it.

Inside a transaction each change waits as an ``on_commit`` marker (so savepoint rollbacks
drop it) and a commit hook writes the survivors as one row; a lone autocommit statement
writes its row itself where the backend can. docs/delivery.md has the SQL."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DatabaseError

from auditq import conf
from auditq.backends import backend
from auditq.stream import events
from auditq.stream.events import Change
from auditq.stream.squash import squash

logger = logging.getLogger("auditq")

STATE = "_auditq_outbox"


class Pending:
    """A change waiting in ``connection.run_on_commit`` for its transaction to commit."""

    __slots__ = ("change",)

    def __init__(self, change: Change) -> None:
        self.change = change

    def __call__(self) -> None:
        """Do nothing: the commit hook has already written the change to the outbox."""


class PendingMany:
    """The changes of many rows written by one statement (``QuerySet.update()``), waiting
    together as one marker: they commit or roll back together."""

    __slots__ = ("changes", "distinct")

    def __init__(self, changes: list[Change], distinct: bool) -> None:
        self.changes = changes
        self.distinct = distinct
        """Each object once: alone in its transaction, nothing to squash."""

    def __call__(self) -> None:
        """Do nothing: the commit hook has already written the changes to the outbox."""


class Write:
    """A save or delete of a tracked row in flight on a connection, set only when its
    statement is a transaction of its own (:func:`alone`, on PostgreSQL): the execute wrapper
    gives that statement its outbox row (``RETURNING``)."""

    __slots__ = ("change", "instance", "prefixes", "recorded")

    def __init__(
        self,
        instance: Any,
        prefixes: tuple[str, ...],
        change: Callable[[str], Change | None],
    ) -> None:
        self.instance = instance
        self.prefixes = prefixes
        """SQL prefixes of the statements that write the row (``INSERT INTO "t"`` ...)."""
        self.change = change
        """Builds the change for a statement, by its first letter (``I``, ``U``, ``D``)."""
        self.recorded = False
        """Set once a statement carried the change: nothing more to capture for it."""


class State:
    """auditq's hooks on one database connection."""

    __slots__ = ("write",)

    def __init__(self) -> None:
        self.write: Write | None = None


def state(connection: Any) -> State:
    """Return the connection's auditq state, installing the hooks on first use."""
    found = connection.__dict__.get(STATE)
    if found is None:
        found = connection.__dict__[STATE] = State()
        _install(connection, found)
    return found


def alone(connection: Any) -> bool:
    """Whether the next statement on ``connection`` is a transaction of its own (autocommit
    mode, outside any ``atomic()`` block)."""
    if connection.in_atomic_block:
        return False
    # get_autocommit() connects first; once connected, the flag it returns is at hand
    # (and reading it skips that call's async-safety check, a tenth of a save's capture).
    return (
        connection.autocommit if connection.connection is not None else connection.get_autocommit()
    )


def add(connection: Any, change: Change) -> Pending:
    """Hold ``change`` until the transaction on ``connection`` commits; drop it on rollback.

    Returns the marker, whose ``change`` the caller may still complete (a key the
    database assigned) before the commit.
    """
    state(connection)
    pending = Pending(change)
    if connection.in_atomic_block:
        connection.on_commit(pending)
    else:
        # Only reached when a change is made outside any atomic block: Django wraps
        # deletes and many-to-many changes and auditq wraps saves, so this is manual
        # transaction management; the row joins whatever transaction is open.
        _write(connection, [change], commit=False)
        committed(connection)
    return pending


def add_many(connection: Any, changes: list[Change], *, distinct: bool = False) -> None:
    """:func:`add` for the changes of one statement, held as one marker; ``distinct``: each
    object once among them."""
    state(connection)
    if connection.in_atomic_block:
        connection.on_commit(PendingMany(changes, distinct))
    else:
        _write(connection, changes, commit=False)
        committed(connection)


def _install(connection: Any, found: State) -> None:
    commit = connection.commit

    def commit_with_outbox() -> None:
        if not connection.in_atomic_block and connection.run_on_commit:
            changes = []
            markers = 0
            distinct = True
            for _, f, _ in connection.run_on_commit:
                kind = type(f)
                if kind is Pending:
                    changes.append(f.change)
                    markers += 1
                elif kind is PendingMany:
                    changes += f.changes
                    markers += 1
                    distinct = distinct and f.distinct
            if len(changes) > 1 and not (markers == 1 and distinct) and conf.get().SQUASH:
                changes = squash(changes)  # one change per object
            if changes:
                try:
                    # On PostgreSQL the COMMIT goes with the row; Django's own commit
                    # then finds nothing left to commit.
                    _write(connection, changes, commit=True)
                except DatabaseError:
                    raise
                except Exception as exc:
                    # Django rolls a failed commit back only on DatabaseError: anything
                    # else would leave the transaction open. Rolled back, not lost: the
                    # caller sees the error.
                    raise DatabaseError(f"auditq could not write its outbox row: {exc!r}") from exc
                connection.run_on_commit.append((set(), lambda: committed(connection), False))
        commit()

    def execute(run: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        write = found.write
        # ``write`` is only set for a lone statement (see capture): no need to ask again.
        if write is None or many or write.recorded or not sql.startswith(write.prefixes):
            return run(sql, params, many, context)
        change = write.change(sql[0])
        if change is None:
            return run(sql, params, many, context)
        sql, params = _with_put(sql, params, change, write.instance, connection)
        result = run(sql, params, many, context)
        # An UPDATE that matched no row wrote no outbox row: Django may INSERT next.
        write.recorded = context["cursor"].rowcount > 0
        return result

    connection.commit = commit_with_outbox
    connection.execute_wrappers.append(execute)


def _with_put(
    sql: str, params: Any, change: Change, instance: Any, connection: Any
) -> tuple[str, Any]:
    """Make a row's own statement write its outbox row."""
    key_sql = None
    if change.pk == events.PK_SLOT:
        # The database assigns the key in this very statement: the row keeps it beside the
        # payload, and the worker puts it where the payload says PK_SLOT.
        meta = instance._meta
        quote = connection.ops.quote_name
        key_sql = f"{quote(meta.db_table)}.{quote(meta.pk.column)}::text"
    return backend(connection).with_outbox_put(
        sql, params, events.dumps([change]), key_sql=key_sql, notify=conf.get().NOTIFY
    )


def _write(connection: Any, changes: Sequence[Change], *, commit: bool) -> None:
    """Write one outbox row holding ``changes`` (and, where the backend can, commit with it)."""
    payload = events.dumps(changes)
    backend(connection).write_outbox(connection, payload, commit=commit, notify=conf.get().NOTIFY)


_committed: list[Callable[[str], None]] = []


def on_commit(listener: Callable[[str], None]) -> None:
    """Call ``listener(alias)`` each time outbox rows were committed on a connection
    (delivery records them at once when Celery runs tasks eagerly)."""
    if listener not in _committed:
        _committed.append(listener)


def committed(connection: Any) -> None:
    """Rows were committed on ``connection``: tell the listeners."""
    for listener in _committed:
        listener(connection.alias)
