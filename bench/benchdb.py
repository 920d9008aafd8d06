"""What the bench scripts create and remove: a throwaway PostgreSQL database on
DATABASE_URL's server, and auditq's queue on the broker."""

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


def delete_queue(app: Any, queue: str) -> None:
    """Purge and delete ``queue`` (and its exchange, named alike) from ``app``'s broker.

    On Redis, also the binding keys kombu keeps for the exchange.
    """
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_purge(queue)
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
        client = getattr(channel, "client", None)
        if conn.transport.driver_type == "redis" and client is not None:
            client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
