"""Everything PostgreSQL and SQLite do differently, behind one interface.

Callers ask :func:`backend` for the connection's backend and test its ``supports_*``
flags, as Django's own code tests ``connection.features``: a flag that is set promises a
faster or stronger way, and the portable way (the ORM, or the base class's SQL) is used
otherwise.
"""

from __future__ import annotations

from typing import Any

from auditq.backends.base import OUTBOX_TABLE, Backend, Taken
from auditq.backends.postgresql import PostgreSQLBackend
from auditq.backends.sqlite import SQLiteBackend

__all__ = ["OUTBOX_TABLE", "Backend", "Taken", "backend"]

_PORTABLE = Backend()
_BY_VENDOR: dict[str, Backend] = {"postgresql": PostgreSQLBackend(), "sqlite": SQLiteBackend()}


def backend(connection: Any) -> Backend:
    """The backend of a Django database connection (the portable one for any database
    auditq has no special path for)."""
    return _BY_VENDOR.get(connection.vendor, _PORTABLE)
