"""SQLite: the portable backend, with keys passed as one JSON array (JSON1, which
Django's JSONField needs on SQLite anyway)."""

from __future__ import annotations

import json
from typing import Any

from auditq.backends.base import Backend


class SQLiteBackend(Backend):
    vendor = "sqlite"

    def keys_where(
        self, connection: Any, table: str, column: str, keys: list[int]
    ) -> tuple[str, list[Any]] | None:
        quote = connection.ops.quote_name
        where = f"{quote(table)}.{quote(column)} IN (SELECT value FROM json_each(%s))"
        return where, [json.dumps(keys)]
