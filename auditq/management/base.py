"""What auditq's management commands share: bad input is one line, never a usage dump."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connections


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
