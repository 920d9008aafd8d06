from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from auditq import delivery


class Command(BaseCommand):
    help = (
        "Publish again the changes that committed but never reached a worker (outbox rows "
        "older than AUDITQ['RELAY_AFTER_SECONDS']). Safe to run at any time, and at once "
        "with workers: delivery is idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Relay rows at least this old (default: RELAY_AFTER_SECONDS; 0 relays all).",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias.")

    def handle(self, *args: Any, older_than: float | None, database: str, **options: Any) -> None:
        if older_than is not None and older_than < 0:
            raise CommandError("--older-than must be zero or more seconds.")
        if database not in connections:
            raise CommandError(f"Unknown database alias {database!r}.")
        waiting, _ = delivery.backlog(database)
        try:
            published = delivery.relay(older_than=older_than, using=database)
        except delivery.BrokerUnavailable as exc:
            raise CommandError(f"The broker is unavailable ({exc}); nothing was lost.") from exc
        self.stdout.write(f"Published {published} of {waiting} undelivered outbox rows.")
