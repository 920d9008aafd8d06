from __future__ import annotations

import argparse
import math
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from auditq import conf
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
        if database not in relay.outbox_databases():
            raise CommandError(
                f"Database {database!r} holds no outbox (AUDITQ['DATABASE'] keeps only the "
                f"audit entries there); relay one of: {', '.join(relay.outbox_databases())}."
            )
        waiting, _ = relay.backlog(database)
        young, recent = relay.not_due(older_than, database) if waiting else (0, 0)
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
        reasons = _why_not(published, waiting, young, recent, older_than)
        self.stdout.write(f"Published {published} of {waiting} undelivered outbox rows{reasons}.")


def _why_not(
    published: int, waiting: int, young: int, recent: int, older_than: float | None
) -> str:
    """Why rows were left in the outbox: too young, or published again a moment ago."""
    if published >= waiting or not (young or recent):
        return ""
    if older_than is None:
        age = f"{_number(conf.get().RELAY_AFTER_SECONDS)} s (RELAY_AFTER_SECONDS)"
    else:
        age = f"{_number(older_than)} s (--older-than)"
    reasons = []
    if young:
        reasons.append(
            f"{young} {'is' if young == 1 else 'are'} younger than {age}: running workers "
            "record new rows by themselves"
        )
    if recent:
        reasons.append(
            f"{recent} {'was' if recent == 1 else 'were'} published less than {age} ago "
            f"and {'waits' if recent == 1 else 'wait'} for a worker"
        )
    return f"; {'; '.join(reasons)}. --older-than 0 publishes every row now"


def _number(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
