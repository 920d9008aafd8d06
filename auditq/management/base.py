"""What auditq's management commands share: bad input is one line, never a usage dump."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class AuditqCommand(BaseCommand):
    """A command whose argument errors print one line (``manage.py x: error: ...``).

    argparse prints its whole usage block before the error; ``--help`` still shows it.
    """

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
        return parser
