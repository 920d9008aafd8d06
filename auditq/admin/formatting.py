"""How the admin pages write times."""

from __future__ import annotations

import datetime

from django.utils import timezone


def when(value: datetime.datetime) -> str:
    """A time to the second, in the current time zone: ``"2026-11-22 14:03:07 UTC"``."""
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S %Z}"
