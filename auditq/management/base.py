"""What auditq's management commands share: bad input is one line, never a usage dump."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, models, router


class AuditqCommand(BaseCommand):
    """A command whose argument errors print one line (``manage.py x: error: ...``).

    argparse prints its whole usage block before the error; ``--help`` still shows it.
    """

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
        return parser


MAX_BATCH_SIZE = 10_000
"""The largest ``--batch-size``: a batch is one short transaction and one ``IN (...)``
list (SQLite takes at most 32,766 parameters); beyond 64 bits the ``LIMIT`` itself
fails (``OverflowError`` on SQLite, ``bigint out of range`` on PostgreSQL)."""


def batch_size(text: str) -> int:
    """``--batch-size``: a whole number from 1 to :data:`MAX_BATCH_SIZE`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH_SIZE:,}, not {value}")
    return value


def database(alias: str) -> str:
    """``--database``: an alias of ``DATABASES``."""
    if alias not in connections:
        raise argparse.ArgumentTypeError(f"unknown database alias {alias!r}")
    return alias


def add_database_argument(parser: CommandParser, what: str) -> None:
    """``--database``, for a command that reads or writes ``what`` (default: the routers')."""
    parser.add_argument(
        "--database",
        type=database,
        default=None,
        help=f"Database alias (default: the one the routers give the {what}).",
    )


def holding(alias: str | None, model: type[models.Model]) -> str:
    """The database of ``model``'s rows: ``alias`` if its table is there, else the routers'
    choice when ``alias`` is ``None``.

    Raises:
        CommandError: ``alias`` holds no such table (a separate audit database, say).
    """
    if alias is None:
        return router.db_for_read(model)
    if not router.allow_migrate_model(alias, model):
        raise CommandError(
            f"Database {alias!r} holds no {model._meta.verbose_name_plural}: they are in "
            f"{router.db_for_read(model)!r}. Leave out --database, or name that one."
        )
    return alias
