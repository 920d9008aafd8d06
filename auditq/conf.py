"""The ``AUDITQ`` settings: one typed object with defaults, read in one place.

Nothing else in auditq reads ``settings.AUDITQ``. :func:`problems` validates the raw
dict and returns what is wrong (``checks.py`` reports it); :func:`get` returns the typed
settings, cached until Django's ``setting_changed`` signal clears it.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """auditq's settings, with their defaults."""

    QUEUE: str | None = None
    """Celery queue for auditq's tasks; ``None`` is Celery's default queue."""
    MASKED_FIELDS: tuple[str, ...] = ()
    """Extra shell-style field-name patterns masked on every audited model."""
    TRUSTED_PROXIES: tuple[Network, ...] = ()
    """Proxies whose ``X-Forwarded-For`` header is believed; none by default."""
    RELAY_AFTER_SECONDS: float = 60.0
    """Age at which a published but still undelivered outbox row is published again."""
    PUBLISH_TIMEOUT: float = 1.0
    """Seconds the relay waits for the broker (connect and send) before trying again."""
    RELAY_BATCH_SIZE: int = 500
    """Outbox rows the relay claims per database round trip and sends per message."""
    RELAY_POLL_SECONDS: float = 0.2
    """How often the relay looks for new rows when no notification woke it (on PostgreSQL
    the first commit after it went idle notifies; other databases are polled at this
    pace)."""
    NOTIFY: bool = True
    """PostgreSQL: the first commit that writes an outbox row while a relay waits sends
    ``NOTIFY``, which wakes it at once. Commits while every relay is busy send none
    (PostgreSQL serializes the commits of transactions that notify). ``False``: no commit
    notifies and the relay polls every ``RELAY_POLL_SECONDS``."""
    RELAY_IN_WORKER: bool = True
    """Run the relay thread in every Celery worker process."""
    RELAY_THREADS: int = 2
    """Threads recording fresh rows, per outbox database, in each worker process: one
    listens and sweeps, the others help it through a backlog (each holds a connection)."""
    SQUASH: bool = True
    """Several changes of one object in one transaction are recorded as one (create then
    updates: one create with the final values; create then delete: nothing); ``False``
    records every save."""
    COUNTER_DELAY_SECONDS: float = 1.0
    """How long counter-cache deltas gather before a worker applies them: a parent gets
    at most one ``UPDATE`` per this many seconds, and its count is right this much later."""
    DATABASE: str | None = None
    """The database alias that holds the audit entries, and only them of auditq's tables
    (with ``auditq.routers.AuditRouter`` in ``DATABASE_ROUTERS``); ``None``: each entry
    goes to the database of the change it records, with the outbox."""
    EXPORT_LINK_SECONDS: float = 86400.0
    """How long an admin export's download link works after it was given out (on the
    run's page, or in the email); the run's page gives a fresh one."""
    CHAIN: bool = True
    """Chain every recorded entry to the one before it in its model's trail (a SHA-256
    hash), so that ``auditq_verify`` finds entries edited, deleted or inserted behind
    auditq's back. ``False`` records unchained entries, which verification reports as
    breaks once a chain has started."""
    MAX_VALUE_LENGTH: int = 100_000
    """The longest value (characters of its JSON) a change carries: a longer one is kept
    as its first this many characters with a marker, so a huge field never makes a huge
    outbox row, message or entry."""
    PARTITION: str | None = None
    """PostgreSQL: ``"month"``, ``"week"`` or ``"day"`` range-partitions the audit entries'
    table by ``occurred_at`` (UTC periods); the workers create the partitions ahead and
    ``auditq_prune`` drops whole ones. ``None``: one table. An existing table is converted
    with ``manage.py auditq_partition``; ``migrate`` partitions a new, empty one."""
    ADMIN_SEARCH_DAYS: int | None = 90
    """On a trail of more than ``ADMIN_SEARCH_DAYS_ABOVE`` entries, a search in the admin's
    list of entries covers the last this many days unless a period is chosen; the results
    offer "all time". ``None``: every search covers all time."""
    ADMIN_SEARCH_DAYS_ABOVE: int = 1_000_000
    """The size (the database's estimate, PostgreSQL only) past which
    ``ADMIN_SEARCH_DAYS`` applies; ``0``: always, on every database."""


DEFAULT_MASKED_FIELDS: tuple[str, ...] = ("password", "*password*", "*token*", "*secret*")

_TYPES: dict[str, tuple[type, ...]] = {
    "QUEUE": (str, type(None)),
    "MASKED_FIELDS": (list, tuple),
    "TRUSTED_PROXIES": (list, tuple),
    "RELAY_AFTER_SECONDS": (int, float),
    "SQUASH": (bool,),
    "PUBLISH_TIMEOUT": (int, float),
    "RELAY_BATCH_SIZE": (int,),
    "RELAY_POLL_SECONDS": (int, float),
    "NOTIFY": (bool,),
    "RELAY_IN_WORKER": (bool,),
    "RELAY_THREADS": (int,),
    "COUNTER_DELAY_SECONDS": (int, float),
    "DATABASE": (str, type(None)),
    "EXPORT_LINK_SECONDS": (int, float),
    "CHAIN": (bool,),
    "MAX_VALUE_LENGTH": (int,),
    "PARTITION": (str, type(None)),
    "ADMIN_SEARCH_DAYS": (int, type(None)),
    "ADMIN_SEARCH_DAYS_ABOVE": (int,),
}

PERIODS = ("month", "week", "day")
"""The values of ``AUDITQ["PARTITION"]`` (besides ``None``)."""


def _raw() -> Any:
    return getattr(django_settings, "AUDITQ", {})


def problems() -> list[tuple[str, str]]:
    """Return ``(message, hint)`` for every problem in ``settings.AUDITQ``."""
    raw = _raw()
    if not isinstance(raw, dict):
        return [(f"AUDITQ must be a dict, not {type(raw).__name__}.", "Use AUDITQ = {...}.")]
    known = ", ".join(f.name for f in fields(Settings))
    found = []
    for key, value in raw.items():
        if key not in _TYPES:
            found.append((f"AUDITQ has an unknown key {key!r}.", f"Known keys: {known}."))
            continue
        expected = _TYPES[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in expected)
            found.append(
                (
                    f"AUDITQ[{key!r}] must be {names}, not {type(value).__name__}.",
                    f"Fix AUDITQ[{key!r}] in your settings.",
                )
            )
            continue
        found.extend(_value_problems(key, value))
    return found


def _value_problems(key: str, value: Any) -> list[tuple[str, str]]:
    if key == "MASKED_FIELDS" and not all(isinstance(p, str) and p for p in value):
        return [(f"AUDITQ[{key!r}] must hold non-empty strings.", 'For example ["*iban*"].')]
    if key == "TRUSTED_PROXIES":
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except (TypeError, ValueError):
                return [
                    (
                        f"AUDITQ['TRUSTED_PROXIES'] has {item!r}, not an IP address or network.",
                        'Use addresses or CIDR networks, e.g. ["10.0.0.0/8", "127.0.0.1"].',
                    )
                ]
    if key == "DATABASE" and value is not None and value not in django_settings.DATABASES:
        return [
            (
                f"AUDITQ['DATABASE'] is {value!r}, which is not an alias of DATABASES.",
                f"Add {value!r} to DATABASES, or name one of: "
                f"{', '.join(map(repr, django_settings.DATABASES))}.",
            )
        ]
    if key == "PARTITION" and value is not None and value not in PERIODS:
        return [
            (
                f"AUDITQ['PARTITION'] is {value!r}, not a period auditq partitions by.",
                'Use "month", "week" or "day", or None for one table.',
            )
        ]
    if key == "ADMIN_SEARCH_DAYS_ABOVE" and value < 0:
        return [(f"AUDITQ[{key!r}] must be 0 or more.", f"Got {value!r}.")]
    if key == "ADMIN_SEARCH_DAYS" and value is not None and not 0 < value <= 36_500:
        return [
            (
                f"AUDITQ[{key!r}] must be a number of days from 1 to 36500, or None.",
                f"Got {value!r}.",
            )
        ]
    positive = (
        "RELAY_AFTER_SECONDS",
        "PUBLISH_TIMEOUT",
        "RELAY_BATCH_SIZE",
        "RELAY_POLL_SECONDS",
        "RELAY_THREADS",
        "COUNTER_DELAY_SECONDS",
        "EXPORT_LINK_SECONDS",
        "MAX_VALUE_LENGTH",
    )
    if key in positive and not 0 < value < float("inf"):
        return [(f"AUDITQ[{key!r}] must be a finite number greater than zero.", f"Got {value!r}.")]
    return []


_cache: dict[str, Settings] = {}
_lock = threading.Lock()
_generation = [0]


def get() -> Settings:
    """Return the typed settings; raise ImproperlyConfigured if ``AUDITQ`` is invalid.

    Read once and kept until Django's settings change. A thread (the relay's) that read
    them just before a change never keeps its stale copy: the change bumps a generation.
    """
    found = _cache.get("settings")
    if found is not None:
        return found
    with _lock:
        generation = _generation[0]
    found = _read()
    with _lock:
        if generation == _generation[0]:
            _cache["settings"] = found
    return found


def _read() -> Settings:
    found = problems()
    if found:
        raise ImproperlyConfigured("; ".join(message for message, _ in found))
    raw = dict(_raw())
    if "MASKED_FIELDS" in raw:
        raw["MASKED_FIELDS"] = tuple(raw["MASKED_FIELDS"])
    if "TRUSTED_PROXIES" in raw:
        raw["TRUSTED_PROXIES"] = tuple(
            ipaddress.ip_network(item, strict=False) for item in raw["TRUSTED_PROXIES"]
        )
    return Settings(**raw)


@receiver(setting_changed)
def _clear(setting: str, **kwargs: Any) -> None:
    if setting == "AUDITQ":
        with _lock:
            _generation[0] += 1
            _cache.clear()
