from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import CommandError, CommandParser
from django.db import connections
from django.utils import dateparse, timezone
from tqdm import tqdm

from auditq.backends import backend
from auditq.chain import verify
from auditq.management.base import AuditqCommand, add_database_argument, holding
from auditq.models import AuditEntry


def model_label(text: str) -> str:
    """``--model``: an installed model's ``app_label.Model``."""
    try:
        apps.get_model(text)
    except (LookupError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an installed model") from None
    return text


def moment(text: str) -> datetime.datetime:
    """``--since``: an ISO 8601 date or time; without a zone, in the current one."""
    try:
        found = dateparse.parse_datetime(text)
        if found is None:
            day = dateparse.parse_date(text)
            found = datetime.datetime.combine(day, datetime.time()) if day else None
    except ValueError:
        found = None
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time")
    return timezone.make_aware(found) if timezone.is_naive(found) else found


class Command(AuditqCommand):
    help = (
        "Recompute the audit trail's hash chains (one per model) and exit 0 when they are "
        "intact; otherwise exit 1 naming, for each broken chain, the first entry where it "
        "breaks (an entry edited, deleted or inserted behind auditq's back)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model", type=model_label, metavar="app_label.Model", help="Only this model."
        )
        parser.add_argument(
            "--since",
            type=moment,
            metavar="ISO-8601",
            help="Only the entries from each chain's first that occurred since then (the "
            "hash before it is taken on trust).",
        )
        add_database_argument(parser, "entries")

    def handle(
        self,
        *args: Any,
        model: str | None,
        since: datetime.datetime | None,
        database: str | None,
        verbosity: int,
        **options: Any,
    ) -> None:
        database = holding(database, AuditEntry)
        content_type = None
        if model is not None:
            found = apps.get_model(model)
            content_type = ContentType.objects.db_manager(database).get_for_model(
                found, for_concrete_model=False
            )
        # The bar shows on a terminal only (tqdm's disable=None), never in logs or pipes.
        with tqdm(
            total=_estimate(database, content_type, since),
            unit=" entries",
            file=sys.stderr,
            disable=None if verbosity > 0 else True,
        ) as bar:
            results = verify.verify(database, content_type, since, progress=bar.update)
        for result in results:
            if verbosity > 0 or not result.intact:
                self.stdout.write(result.describe())
        broken = [result for result in results if not result.intact]
        if broken:
            first = ", ".join(
                f"{result.model} at entry {result.broken_entry_id}" for result in broken
            )
            raise CommandError(f"The audit trail is broken: {first}.")
        if verbosity > 0:
            self.stdout.write(f"The audit trail is intact ({len(results)} chains).")


def _estimate(database: str, content_type: Any, since: datetime.datetime | None) -> int | None:
    """The bar's total: the server's estimate of the whole table where it keeps one, or a
    count."""
    entries = AuditEntry.objects.using(database)
    if content_type is None and since is None:
        connection = connections[database]
        found = backend(connection)
        estimate = found.estimate_rows(connection, AuditEntry._meta.db_table)
        if estimate is not None:  # the table was analysed
            return estimate
    if content_type is not None:
        entries = entries.filter(content_type=content_type)
    if since is not None:
        entries = entries.filter(occurred_at__gte=since)
    return entries.count()
