"""How the admin pages write times and progress."""

from __future__ import annotations

import datetime

from django.utils import timezone


def when(value: datetime.datetime) -> str:
    """A time to the second, in the current time zone: ``"2026-11-22 14:03:07 UTC"``."""
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S %Z}"


def progress(done: int | None, total: int | None) -> str:
    """How far a run is: ``"1,200 of 10,000 (12%)"``, ``"1,200"`` without a total, or
    ``"-"`` when its steps report nothing."""
    if done is None:
        return "-"
    if not total:
        return f"{done:,}"
    return f"{done:,} of {total:,} ({min(done / total, 1.0):.0%})"
