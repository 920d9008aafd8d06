"""Every management command runs in an audit context: ``--audit-actor USERNAME`` (or the
``AUDITQ_ACTOR`` environment variable) names the actor, and ``context["command"]`` the
command.

Django has no hook for an option of every command, so :func:`install` wraps two public,
documented methods of ``BaseCommand``, once, from ``AuditqConfig.ready()``:
``create_parser()`` adds the option (so ``call_command(..., audit_actor=...)`` takes it
too) and ``execute()`` enters the context around the command. Both run for commands that
override them, as long as the override calls ``super()``, as Django's own do.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from auditq.stream.context import audit_context

ENVIRONMENT = "AUDITQ_ACTOR"
"""The environment variable that names the actor when ``--audit-actor`` is not given."""

LEFT_OUT = frozenset({"runserver", "testserver", "test"})
"""Commands that serve requests or run tests: their changes take the context of the
request or of the test, never the command's (a command class opts out the same way with
``auditq_context = False``)."""


def _name(command: BaseCommand) -> str:
    """The name the command was called by (``create_parser`` is told it), else its module's."""
    return getattr(command, "_auditq_name", "") or type(command).__module__.rsplit(".", 1)[-1]


def _left_out(command: BaseCommand) -> bool:
    return getattr(command, "auditq_context", True) is False or _name(command) in LEFT_OUT


def find_actor(username: str) -> Any:
    """The user whose ``USERNAME_FIELD`` is ``username``.

    Raises:
        CommandError: no such user, or the users cannot be read (the message names it).
    """
    model = get_user_model()
    field = model.USERNAME_FIELD
    try:
        found = model._default_manager.filter(**{field: username}).first()
    except DatabaseError as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CommandError(
            f"--audit-actor / {ENVIRONMENT}: the users cannot be read to find {username!r} ({why})."
        ) from exc
    if found is None:
        raise CommandError(
            f"--audit-actor / {ENVIRONMENT}: no user with {field} {username!r}; the command "
            "did not run."
        )
    return found


def _wrap_create_parser(original: Callable[..., CommandParser]) -> Callable[..., CommandParser]:
    @functools.wraps(original)
    def create_parser(
        self: BaseCommand, prog_name: str, subcommand: str, **kwargs: Any
    ) -> CommandParser:
        parser = original(self, prog_name, subcommand, **kwargs)
        self._auditq_name = subcommand  # type: ignore[attr-defined]
        if _left_out(self):
            return parser
        try:
            parser.add_argument(
                "--audit-actor",
                metavar="USERNAME",
                default=None,
                help=(
                    "The user the command's changes are recorded as made by (default: "
                    f"the {ENVIRONMENT} environment variable)."
                ),
            )
        except argparse.ArgumentError:  # the command has an option of that name: its own
            self.auditq_context = False  # type: ignore[attr-defined]
        return parser

    create_parser.auditq_wrapped = True  # type: ignore[attr-defined]
    return create_parser


def _wrap_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        if _left_out(self):
            return original(self, *args, **options)
        username = options.pop("audit_actor", None)
        username = username or os.environ.get(ENVIRONMENT) or None
        given = {"actor": find_actor(username)} if username else {}
        with audit_context(**given, command=_name(self)):
            return original(self, *args, **options)

    execute.auditq_wrapped = True  # type: ignore[attr-defined]
    return execute


def install() -> None:
    """Wrap ``BaseCommand.create_parser`` and ``BaseCommand.execute`` (once)."""
    if not getattr(BaseCommand.create_parser, "auditq_wrapped", False):
        BaseCommand.create_parser = _wrap_create_parser(BaseCommand.create_parser)  # type: ignore[method-assign]
    if not getattr(BaseCommand.execute, "auditq_wrapped", False):
        BaseCommand.execute = _wrap_execute(BaseCommand.execute)  # type: ignore[method-assign]
