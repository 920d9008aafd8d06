from __future__ import annotations

import argparse
import math
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from auditq.delivery import broker, relay
from auditq.management.base import AuditqCommand


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > 10 * 365 * 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a finite number of seconds, from 0 to ten years"
        )
    return value


class Command(AuditqCommand):
    help = (
        "Publish again the changes that committed but never reached a worker (outbox rows "
        "older than AUDITQ['RELAY_AFTER_SECONDS']), and the callback runs and operation steps "
        "that are due. Workers relay new rows by themselves; "
        "this is for operators and for beat. Safe to run at any time: delivery is idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=seconds,
            default=None,
            metavar="SECONDS",
            help="Relay rows at least this old (default: RELAY_AFTER_SECONDS; 0 relays all).",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias.")

    def handle(self, *args: Any, older_than: float | None, database: str, **options: Any) -> None:
        if database not in connections:
            raise CommandError(f"Unknown database alias {database!r}.")
        waiting, _ = relay.backlog(database)
        try:
            published = relay.relay(older_than=older_than, using=database)
            # Callback runs and operation steps that are due (retries, stalled runs).
            swept = relay.sweep(database)
        except broker.BrokerUnavailable as exc:
            raise CommandError(
                f"The broker is unavailable ({exc}); nothing was lost: the rows stay in the "
                "outbox and the workers' relay delivers them once the broker is back."
            ) from exc
        except broker.NoCeleryApp as exc:
            raise CommandError(f"Nothing was published: {exc}") from exc
        except ImportError as exc:
            raise CommandError(
                f"Celery cannot load its broker transport ({exc}). Install what the "
                'transport needs, e.g. pip install "celery[redis]". Nothing was lost.'
            ) from exc
        if swept:
            self.stdout.write(f"Published {swept} due callback runs and operation steps.")
        self.stdout.write(f"Published {published} of {waiting} undelivered outbox rows.")
