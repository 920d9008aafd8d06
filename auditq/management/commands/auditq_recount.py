from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from tqdm import tqdm

from auditq.consumers import recount
from auditq.management.base import AuditqCommand, batch_size, database


class Command(AuditqCommand):
    help = (
        "Recompute @counter_cache columns from the children and correct the wrong ones, in "
        "batches, safe while writes continue. Name child models (that declare counters) or "
        "parent models (that hold them); none means every counter."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model")
        parser.add_argument("--field", metavar="F", help="Only the counter column F.")
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            default=recount.DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"Parents checked per transaction (default {recount.DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only print the counters that are wrong."
        )
        parser.add_argument(
            "--database", type=database, default=DEFAULT_DB_ALIAS, help="Database alias."
        )

    def handle(
        self,
        *args: Any,
        models: list[str],
        field: str | None,
        batch_size: int,
        dry_run: bool,
        database: str,
        verbosity: int,
        **options: Any,
    ) -> None:
        try:
            selected = recount.counters_for_labels(models, field)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not selected:
            self.stdout.write("No counter caches are declared.")
            return
        # The bar shows on a terminal only (tqdm's disable=None), never in logs or pipes.
        with tqdm(
            total=recount.parents_to_check(selected, database),
            unit=" parents",
            file=sys.stderr,
            disable=None if verbosity > 0 else True,
        ) as bar:
            wrong = recount.recount(
                selected, database, batch_size=batch_size, dry_run=dry_run, progress=bar.update
            )
        for counter in wrong:
            self.stdout.write(
                f"{counter.parent} {counter.key}: {counter.field} is {_number(counter.stored)}, "
                f"should be {_number(counter.true)}"
            )
        self.stdout.write(_summary(len(wrong), dry_run))


def _summary(wrong: int, dry_run: bool) -> str:
    if not wrong:
        return "Every counter checked is right: nothing to correct."
    found = f"{wrong} wrong counter{'s' if wrong != 1 else ''} found"
    return f"{found}; --dry-run: none corrected." if dry_run else f"{found} and corrected."


def _number(value: Any) -> str:
    return format(value.normalize(), "f")
