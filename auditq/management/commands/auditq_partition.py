from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import OperationalError
from tqdm import tqdm

from auditq import conf, partitions
from auditq.management.base import AuditqCommand, add_database_argument, holding
from auditq.models import AuditEntry


def whole(least: int) -> Any:
    """argparse type: a whole number, ``least`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
        return value

    return parse


class Command(AuditqCommand):
    help = (
        "Convert the audit entries' table, with its rows, into a table partitioned by "
        "AUDITQ['PARTITION'] (PostgreSQL): the new table is filled beside the live one in "
        "batches while workers keep recording, then swapped in under a lock held for a "
        "moment. The old table is kept as auditq_auditentry_unpartitioned (--drop-old: "
        "dropped). Run it again if it stopped: it starts over."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=whole(1),
            default=50_000,
            metavar="N",
            help="Rows copied per transaction (default 50,000).",
        )
        parser.add_argument(
            "--ahead",
            type=whole(0),
            default=partitions.AHEAD,
            metavar="N",
            help=f"Periods made ahead of the current one (default {partitions.AHEAD}).",
        )
        parser.add_argument(
            "--drop-old",
            action="store_true",
            help="Drop the unpartitioned table in the swap instead of keeping it.",
        )
        add_database_argument(parser, "audit entries")

    def handle(
        self,
        *args: Any,
        batch_size: int,
        ahead: int,
        drop_old: bool,
        database: str | None,
        verbosity: int,
        **options: Any,
    ) -> None:
        period = conf.get().PARTITION
        if period is None:
            raise CommandError(
                'AUDITQ[\'PARTITION\'] is None: set it to "month", "week" or "day" first.'
            )
        alias = holding(database, AuditEntry)
        with tqdm(unit=" rows", file=sys.stderr, disable=None if verbosity > 0 else True) as bar:
            try:
                done = partitions.convert(
                    period,
                    alias,
                    batch_size=batch_size,
                    ahead=ahead,
                    keep_old=not drop_old,
                    progress=bar.update,
                )
            except ValueError as exc:
                raise CommandError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from None
            except OperationalError as exc:
                raise CommandError(
                    f"A lock was not had in time ({str(exc).strip().splitlines()[0]}); the "
                    "table is as it was. Run the command again."
                ) from None
        kept = "dropped" if drop_old else f"kept as {partitions.OLD}"
        self.stdout.write(
            f"Partitioned the audit entries by {period}: {done.rows} rows copied in "
            f"{done.copy_seconds:.1f} s into {done.partitions} partitions; writes paused "
            f"{done.pause_seconds * 1000:.0f} ms in all, the swap locked the table "
            f"{done.swap_seconds * 1000:.0f} ms. The old table is {kept}."
        )
