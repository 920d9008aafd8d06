from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import models
from tqdm import tqdm

from auditq import exports
from auditq.management.base import AuditqCommand, add_database_argument, holding
from auditq.models import AuditEntry

BATCH = 1000
"""Rows written per write() call."""


def model(text: str) -> type[models.Model]:
    """``--model``: ``app_label.Model`` of an installed model."""
    try:
        return exports.parse_model(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def moment(text: str) -> Any:
    """``--since`` / ``--until``: an ISO 8601 date or time."""
    try:
        return exports.parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(AuditqCommand):
    help = (
        "Write the audit entries, oldest first, as JSON Lines or CSV: to a file, or to "
        "stdout with --output - (the default). Streams in constant memory; a progress bar "
        "shows on a terminal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=exports.FORMATS, required=True)
        parser.add_argument(
            "--output",
            default="-",
            metavar="PATH",
            help="The file to write (replaced if it exists); - for stdout (the default).",
        )
        parser.add_argument(
            "--model", type=model, metavar="app_label.Model", help="Only this model's entries."
        )
        parser.add_argument(
            "--since",
            type=moment,
            metavar="ISO-8601",
            help="Entries that occurred at this time or later (no offset: the current time zone).",
        )
        parser.add_argument(
            "--until", type=moment, metavar="ISO-8601", help="Entries that occurred before this."
        )
        add_database_argument(parser, "entries")

    def handle(
        self,
        *args: Any,
        format: str,
        output: str,
        model: type[models.Model] | None,
        since: Any,
        until: Any,
        database: str | None,
        verbosity: int,
        **options: Any,
    ) -> None:
        database = holding(database, AuditEntry)
        try:
            entries = exports.select(model=model, since=since, until=until, using=database)
        except ValueError:
            raise CommandError(
                f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})."
            ) from None
        writer = exports.Writer(format)
        # The bar shows on a terminal only (tqdm's disable=None), never in logs or pipes;
        # the count behind its total is asked only then.
        bar = tqdm(unit=" entries", file=sys.stderr, disable=None if verbosity > 0 else True)
        with self._open(output) as write, bar:
            if not bar.disable:
                bar.total = entries.count()
                bar.refresh()
            written = 0
            write(writer.header())
            for batch in _batches(exports.rows(entries)):
                write(writer.lines(batch))
                written += len(batch)
                bar.update(len(batch))
        where = "stdout" if output == "-" else output
        if verbosity > 0:
            entries_written = f"{written} audit entr{'y' if written == 1 else 'ies'}"
            self.stderr.write(f"Exported {entries_written} to {where}.")

    @contextlib.contextmanager
    def _open(self, output: str) -> Iterator[Callable[[bytes], object]]:
        """A function writing bytes to ``output``: the file, or the command's stdout (a
        text stream, which ``call_command(stdout=...)`` captures)."""
        if output == "-":
            yield lambda data: self.stdout.write(data.decode(), ending="")
            return
        try:
            file = open(output, "wb")  # noqa: SIM115 (closed below, after the export)
        except OSError as exc:
            raise CommandError(f"--output {output}: {exc.strerror or exc}.") from None
        with file:
            yield file.write


def _batches(rows: Iterator[exports.Row]) -> Iterator[list[exports.Row]]:
    batch: list[exports.Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
