"""The operations defined in this process, by name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditq.operations.definition import Operation

_operations: dict[str, Operation] = {}


class OperationError(Exception):
    """A mistake in an operation's definition or in a ``jump_to``: the run fails at once,
    without retries (retrying cannot fix code)."""


def register(operation: Operation) -> None:
    """Make ``operation`` known by its name (again, if it is defined the same way).

    Raises:
        ValueError: another operation, with other steps, has that name.
    """
    known = _operations.get(operation.name)
    if known is not None and known.paths != operation.paths:
        raise ValueError(f"Operation({operation.name!r}): another operation already has that name.")
    _operations[operation.name] = operation


def get(name: str, step: str = "") -> Operation:
    """The operation registered under ``name``; imports the module of ``step`` (a dotted
    path) first if none is, as a worker that never imported it needs.

    Raises:
        OperationError: no operation has that name.
    """
    if name not in _operations and step:
        parts = step.split(".")
        for end in range(len(parts) - 1, 0, -1):
            try:
                importlib.import_module(".".join(parts[:end]))
            except ImportError:
                continue
            break
    try:
        return _operations[name]
    except KeyError:
        raise OperationError(
            f"no operation named {name!r} is defined (is its module imported at start-up?)."
        ) from None


def find(name: str) -> Operation | None:
    """The operation registered under ``name``, if any (no import)."""
    return _operations.get(name)


def operations() -> list[Operation]:
    """Every registered operation."""
    return list(_operations.values())
