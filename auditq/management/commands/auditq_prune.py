from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import CommandParser
from tqdm import tqdm

from auditq import retention
from auditq.management.base import AuditqCommand, batch_size, database, holding
from auditq.models import AuditEntry, CallbackRun


def days(text: str) -> int:
    """``--older-than``: a whole number of days, 0 or more, that the calendar can hold."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    try:
        retention.cutoff(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 0 days or more, not {value}") from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{value} days is too far back") from None
    return value


class Command(AuditqCommand):
    help = (
        "Delete the audit entries that occurred more than DAYS days ago (with --runs: the "
        "callback and operation runs that finished more than DAYS days ago), in small "
        "batches that never lock the table for long (a partitioned trail first loses the "
        "partitions wholly before the cutoff, each detached and dropped in a moment). Never "
        "asks for confirmation: try --dry-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=days,
            required=True,
            metavar="DAYS",
            help="Delete entries older than this many days (0 deletes everything until now).",
        )
        parser.add_argument(
            "--runs",
            action="store_true",
            help="Delete finished callback and operation runs instead of entries (pending "
            "and running ones stay).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only say how many rows would go."
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            default=retention.DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"Entries deleted per transaction (default {retention.DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--database",
            type=database,
            default=None,
            help="Database alias (default: the one the routers give the entries, or the runs).",
        )

    def handle(
        self,
        *args: Any,
        older_than: int,
        runs: bool,
        dry_run: bool,
        batch_size: int,
        database: str | None,
        verbosity: int,
        **options: Any,
    ) -> None:
        table = CallbackRun if runs else AuditEntry
        if database is not None:
            holding(database, table)  # refuses a database without the table
        before = retention.cutoff(older_than)
        when = f"{older_than} days (before {before:%Y-%m-%d %H:%M:%S %Z})"
        if runs:
            what, unit = f"finished runs older than {when}", " runs"
            waiting, prune = retention.count_runs(before, database), retention.prune_runs
        else:
            what, unit = f"audit entries older than {when}", " entries"
            waiting, prune = retention.count(before, database), retention.prune
        if dry_run:
            self.stdout.write(f"Would delete {waiting} {what}.")
            return
        # The bar shows on a terminal only (tqdm's disable=None), never in logs or pipes.
        with tqdm(
            total=waiting,
            unit=unit,
            file=sys.stderr,
            disable=None if verbosity > 0 else True,
        ) as bar:
            deleted = prune(before, batch_size, database, progress=bar.update)
        self.stdout.write(f"Deleted {deleted} {what}.")
