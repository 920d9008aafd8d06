"""When a failed run is tried again: exponential back-off with jitter, for callback runs and
operation steps alike."""

from __future__ import annotations

import datetime
import random

MAX_DELAY = 3600.0
"""The longest wait between two attempts, in seconds."""


def retry_delay(attempts: int, backoff: float) -> datetime.timedelta:
    """The wait before the next attempt after ``attempts`` failed ones: ``backoff`` doubled
    at each attempt, at most ``MAX_DELAY``, with jitter (so that retries spread out)."""
    delay = min(MAX_DELAY, backoff * 2 ** (attempts - 1))
    return datetime.timedelta(seconds=delay * random.uniform(0.5, 1.5))
