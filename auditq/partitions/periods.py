"""The partitions' periods and names, and what the database holds: whether the trail is
partitioned, and its partitions."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from django.db import connections, router

from auditq import conf
from auditq.models import AuditEntry

TABLE = AuditEntry._meta.db_table
"""The partitioned table."""
DEFAULT = f"{TABLE}_default"
"""The default partition: rows whose period has no partition of its own."""

UTC = datetime.UTC


@dataclass(frozen=True)
class Partition:
    """One partition of the trail."""

    name: str
    start: datetime.datetime | None
    """First instant it holds; ``None`` for the default partition."""
    end: datetime.datetime | None
    """First instant past it; ``None`` for the default partition."""
    rows: int | None
    """The planner's estimate (``None``: never analysed)."""

    @property
    def default(self) -> bool:
        return self.start is None


def period_start(period: str, when: datetime.datetime) -> datetime.datetime:
    """The start (UTC) of the ``period`` that holds ``when``."""
    check_period(period)
    when = when.astimezone(UTC)
    day = datetime.datetime(when.year, when.month, when.day, tzinfo=UTC)
    if period == "day":
        return day
    if period == "week":
        return day - datetime.timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: str, start: datetime.datetime) -> datetime.datetime:
    """The start of the period after the one starting at ``start``."""
    if period == "day":
        return start + datetime.timedelta(days=1)
    if period == "week":
        return start + datetime.timedelta(days=7)
    return (start + datetime.timedelta(days=32)).replace(day=1)


def partition_name(period: str, start: datetime.datetime) -> str:
    """``auditq_auditentry_p2026_12`` (month), ``…_p2026w49`` (ISO week), ``…_p2026_12_06``."""
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{TABLE}_p{year}w{week:02d}"
    if period == "day":
        return f"{TABLE}_p{start:%Y_%m_%d}"
    return f"{TABLE}_p{start:%Y_%m}"


def check_period(period: str) -> None:
    if period not in conf.PERIODS:
        raise ValueError(f"period must be one of {', '.join(conf.PERIODS)}, not {period!r}")


def entries_database(using: str | None = None) -> str:
    """The alias that holds the entries: ``using``, or the routers' (``AUDITQ["DATABASE"]``)."""
    return using or router.db_for_write(AuditEntry)


def is_partitioned(using: str | None = None) -> bool:
    """Whether the entries' table is a partitioned table (PostgreSQL only)."""
    connection = connections[entries_database(using)]
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return bool(row) and row[0] == "p"


_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


def listing(using: str | None = None) -> list[Partition]:
    """The partitions, oldest first and the default last; empty when not partitioned."""
    if not is_partitioned(using):
        return []
    connection = connections[entries_database(using)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::bigint "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound, estimate in rows:
        match = _BOUND.search(bound or "")
        start, end = (_time(match[1]), _time(match[2])) if match else (None, None)
        found.append(Partition(name, start, end, int(estimate) if estimate >= 0 else None))
    far = datetime.datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.start is None, p.start or far))


def _time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:  # MINVALUE, MAXVALUE: not a partition auditq made
        return None
