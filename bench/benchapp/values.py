"""The field values of the benchmark rows, the same for every model."""

import datetime
import decimal
from collections.abc import Sequence
from typing import Any

BASE_TIME = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def row_values(i: int, owner_ids: Sequence[int]) -> dict[str, Any]:
    """Values of the eight fields of row ``i``."""
    return {
        "title": f"row {i}",
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3,
        "count": i,
        "amount": decimal.Decimal(i % 100000) / 100,
        "active": i % 2 == 0,
        "happened_at": BASE_TIME + datetime.timedelta(seconds=i),
        "owner_id": owner_ids[i % len(owner_ids)],
        "data": {"i": i, "tags": ["a", "b"], "ok": True},
    }
