"""Old import paths that moved: they keep working for one release, with a warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the old module ``old``: each name is read from the
    module ``new``, with a ``DeprecationWarning`` that names the new path."""

    def attribute(name: str) -> Any:
        module = importlib.import_module(new)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; the old path goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return attribute
