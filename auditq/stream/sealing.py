"""Values sealed for a worker: encrypted with a key derived from ``SECRET_KEY``.

Masked fields reach handlers in clear but are never stored in clear: sealed (Fernet) on
the request path, opened in the worker's memory. Keys follow ``SECRET_KEY_FALLBACKS``, as
Django's signing does."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.crypto import salted_hmac

from auditq import conf
from auditq.stream.encoding import MASK, encode, json_bytes

SALT = "auditq.stream.sealing"
"""Mixed into each key: the same ``SECRET_KEY`` gives other keys to other uses."""


class SealError(ValueError):
    """Sealed values that no key of this process opens."""


def _key(secret: str | bytes) -> bytes:
    digest = salted_hmac(SALT, "fernet", secret=secret, algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest)


@functools.lru_cache(maxsize=8)
def _keys(secret: str | bytes, fallbacks: tuple[str | bytes, ...]) -> MultiFernet:
    # Deriving a key costs an HMAC and a Fernet; settings change rarely (tests: a few).
    return MultiFernet([Fernet(_key(key)) for key in (secret, *fallbacks)])


def _current() -> MultiFernet:
    return _keys(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def seal(data: Mapping[str, Any]) -> str:
    """Encrypt ``data`` with the current ``SECRET_KEY``; never raise.

    Runs on the request path: values are first made JSON-safe as the audit trail stores
    them (:func:`auditq.stream.encoding.encode`), so a value without a JSON form does not stop
    the save.

    Example:
        >>> unseal(seal({"pin": [None, "1234"]}))
        {'pin': [None, '1234']}
    """
    safe = {str(name): encode(value) for name, value in data.items()}
    return _current().encrypt(json_bytes(safe)).decode("ascii")


def unseal(token: str) -> dict[str, Any]:
    """The data :func:`seal` sealed, with ``SECRET_KEY`` or one of its fallbacks.

    Raises:
        SealError: no key opens the token (it was sealed with another ``SECRET_KEY``).
    """
    try:
        text = _current().decrypt(token)
    except (InvalidToken, ValueError) as exc:  # ValueError: not even ASCII
        raise SealError(
            "the masked values of this change were sealed with another SECRET_KEY: list "
            "the old key in SECRET_KEY_FALLBACKS, then retry the run"
        ) from exc
    # The standard library reads integers beyond 64 bits exactly (orjson: as floats); a
    # run opens one small token, so its speed does not matter here.
    data: dict[str, Any] = json.loads(text)
    return data


SCRUB_MIN_LENGTH = 3
"""Shorter values are not scrubbed from text: a ``1`` or ``no`` would blank out too much."""


def scrub(text: str, values: Iterable[Any]) -> str:
    """``text`` with every masked value in ``values`` written as the mask: what a failed
    handler's error and traceback may quote before they are stored and logged.

    Example:
        >>> scrub("no vault opens with 12-34", ["12-34", None])
        'no vault opens with ***'
    """
    found = {str(v) for v in values if v is not None and not isinstance(v, bool)}
    # Longest first: a value that contains another is scrubbed whole.
    for value in sorted(found, key=len, reverse=True):
        if len(value) >= SCRUB_MIN_LENGTH:
            text = text.replace(value, MASK)
    return text


def masked_name(name: str) -> bool:
    """Whether ``name`` matches a masking pattern (the defaults and ``MASKED_FIELDS``),
    as a field name would: how values that are not fields are judged (an operation's
    ``start()`` arguments and the values its steps set)."""
    lowered = name.lower()
    patterns = conf.DEFAULT_MASKED_FIELDS + conf.get().MASKED_FIELDS
    return any(fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def masked_values(data: Any) -> list[Any]:
    """The values in JSON ``data`` held under a masked name, at any depth (a dict under
    such a name gives all its values): what :func:`scrub` must remove from an error."""
    found: list[Any] = []

    def walk(value: Any, masked: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, masked or masked_name(str(key)))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, masked)
        elif masked:
            found.append(value)

    walk(data, False)
    return found


def mask_named(data: Any) -> Any:
    """JSON ``data`` with every value under a masked name written as the mask, for
    display.

    Example:
        >>> mask_named({"api_token": "tok-1", "order": 7})
        {'api_token': '***', 'order': 7}
    """
    if isinstance(data, Mapping):
        return {
            key: MASK if masked_name(str(key)) else mask_named(item) for key, item in data.items()
        }
    if isinstance(data, list | tuple):
        return [mask_named(item) for item in data]
    return data
