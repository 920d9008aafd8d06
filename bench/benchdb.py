"""The throwaway PostgreSQL database the bench scripts create on DATABASE_URL's server."""

import os
from typing import Any
from urllib.parse import unquote, urlsplit


def postgres_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


def postgres_settings(url: str, name: str) -> dict[str, Any]:
    """A DATABASES entry for database ``name`` on the server ``url`` points at."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def server_execute(url: str, sql: str) -> None:
    """Run ``sql`` in autocommit on the database ``url`` names (CREATE/DROP DATABASE)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)
