"""``@audited``: record a model's audit options in the registry, return the class unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar, overload

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from auditq import registry

M = TypeVar("M", bound=type[models.Model])


def _names(argument: str, value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"@audited({argument}=...) takes a list of field names, not {value!r}.")
    return tuple(value)


@overload
def audited(model: M, /) -> M: ...


@overload
def audited(
    *,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    mask: Iterable[str] = (),
) -> Callable[[M], M]: ...


def audited(
    model: M | None = None,
    /,
    *,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    mask: Iterable[str] = (),
) -> M | Callable[[M], M]:
    """Record every create, update and delete of the decorated model.

    Args:
        fields: record only these fields (default: every concrete and many-to-many field).
        exclude: never record these fields.
        mask: record that these fields changed, never their values. Fields named like
            ``password``, ``*token*`` and ``*secret*`` are masked without being listed.

    Raises:
        TypeError: ``fields`` and ``exclude`` were both given, or a list is not a list of
            names. Unknown names are reported by the system check ``auditq.E001``.
        ImproperlyConfigured: ``"auditq"`` is not in ``INSTALLED_APPS``.

    Example:
        >>> @audited(exclude=["updated_at"], mask=["card_token"])
        ... class Donation(models.Model): ...
    """
    if fields is not None and exclude:
        raise TypeError("@audited takes fields= or exclude=, not both.")
    options = registry.AuditOptions(
        fields=_names("fields", fields),
        exclude=_names("exclude", exclude) or (),
        mask=_names("mask", mask) or (),
    )

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, models.Model)):
            raise TypeError(f"@audited decorates model classes, not {cls!r}.")
        if apps.apps_ready and not apps.is_installed("auditq"):
            # Nothing would ever connect the model: fail now, not silently forever.
            raise ImproperlyConfigured(
                f"@audited on {cls._meta.label} needs 'auditq' in INSTALLED_APPS "
                "(and 'django_celery_results')."
            )
        if cls._meta.abstract or cls._meta.proxy:
            kind = "abstract" if cls._meta.abstract else "proxy"
            raise TypeError(f"@audited cannot decorate the {kind} model {cls.__name__}.")
        registry.register(cls, options)
        return cls

    return decorate if model is None else decorate(model)
