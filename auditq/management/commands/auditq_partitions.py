from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import OperationalError

from auditq import conf, partitions
from auditq.management.base import AuditqCommand, add_database_argument, holding
from auditq.management.commands.auditq_partition import whole
from auditq.models import AuditEntry


class Command(AuditqCommand):
    help = (
        "List the audit entries' partitions (with the planner's row estimates); with "
        "--create, first make the current period's partition and --ahead more where "
        "missing (what the workers do once an hour)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--create", action="store_true", help="Make the partitions ahead that are missing."
        )
        parser.add_argument(
            "--ahead",
            type=whole(0),
            default=partitions.AHEAD,
            metavar="N",
            help=f"With --create: periods made ahead of the current one (default "
            f"{partitions.AHEAD}).",
        )
        add_database_argument(parser, "audit entries")

    def handle(
        self, *args: Any, create: bool, ahead: int, database: str | None, **options: Any
    ) -> None:
        alias = holding(database, AuditEntry)
        if not partitions.is_partitioned(alias):
            raise CommandError(
                f"The audit entries' table in {alias!r} is not partitioned. Set "
                "AUDITQ['PARTITION'] and run manage.py auditq_partition."
            )
        if create:
            period = conf.get().PARTITION
            if period is None:
                raise CommandError(
                    "AUDITQ['PARTITION'] is None: set it to the table's period to make partitions."
                )
            try:
                made = partitions.ensure(alias, period, ahead)
            except OperationalError as exc:
                raise CommandError(
                    f"A lock was not had in time ({str(exc).strip().splitlines()[0]}); run "
                    "the command again."
                ) from None
            self.stdout.write(
                f"Made {len(made)} partitions{': ' if made else ''}{', '.join(made)}."
            )
        for partition in partitions.listing(alias):
            rows = "never analysed" if partition.rows is None else f"about {partition.rows:,} rows"
            span = (
                "default (rows of periods without a partition)"
                if partition.default
                else f"{partition.start:%Y-%m-%d %H:%M} to {partition.end:%Y-%m-%d %H:%M} UTC"
            )
            self.stdout.write(f"{partition.name}  {span}  {rows}")
