"""What ``@audited`` registered, validated and resolved once the app registry is ready.

The decorators only record options here; :func:`tracking` turns them into the field
lists that capture uses on every save, cached per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache

from django.db import models

from auditq import conf


@dataclass(frozen=True)
class AuditOptions:
    """The arguments given to ``@audited``."""

    fields: tuple[str, ...] | None
    """Field names to record; ``None`` records every concrete field."""
    exclude: tuple[str, ...]
    """Field names never recorded."""
    mask: tuple[str, ...]
    """Field names recorded as changed without their values."""


@dataclass(frozen=True)
class TrackedField:
    """One recorded field, resolved against the model."""

    name: str
    """The field's name: the key in ``AuditEntry.changes``."""
    attname: str
    """Where the value lives on the instance (``author_id`` for ``author``)."""
    masked: bool
    """Whether values are replaced by the mask marker."""


@dataclass(frozen=True)
class Tracking:
    """Everything capture needs for one audited model."""

    label: str
    """``app_label.modelname``: how payloads name the model."""
    fields: tuple[TrackedField, ...]
    """Concrete fields recorded on create, update and delete."""
    attnames: frozenset[str]
    """The attnames of ``fields``, for snapshots."""
    m2m: tuple[TrackedField, ...]
    """Many-to-many fields recorded as added / removed keys."""


_audited: dict[type[models.Model], AuditOptions] = {}


def register(model: type[models.Model], options: AuditOptions) -> None:
    """Record that ``model`` is audited with ``options``."""
    _audited[model] = options
    clear_caches()


def audited_models() -> dict[type[models.Model], AuditOptions]:
    """Return every audited model with its options."""
    return dict(_audited)


def is_audited(model: type[models.Model]) -> bool:
    """Tell whether ``model`` itself was decorated with ``@audited``."""
    return model in _audited


def m2m_names(model: type[models.Model]) -> list[str]:
    """Return the names of ``model``'s recorded many-to-many fields (settings not needed)."""
    options = _audited[model]
    return [
        f.name
        for f in model._meta.many_to_many
        if (options.fields is None or f.name in options.fields) and f.name not in options.exclude
    ]


def _selectable(model: type[models.Model]) -> dict[str, models.Field]:
    meta = model._meta
    return {f.name: f for f in (*meta.concrete_fields, *meta.many_to_many)}


def problems() -> list[tuple[type[models.Model], str, str]]:
    """Return ``(model, message, hint)`` for every unknown field name given to ``@audited``."""
    found = []
    for model, options in _audited.items():
        known = _selectable(model)
        for argument in ("fields", "exclude", "mask"):
            for name in getattr(options, argument) or ():
                if name not in known:
                    found.append(
                        (
                            model,
                            f"@audited({argument}=...) on {model._meta.label} names "
                            f"{name!r}, which is not a concrete or many-to-many field.",
                            f"Choose from: {', '.join(sorted(known))}.",
                        )
                    )
    return found


def _masked(name: str, options: AuditOptions, patterns: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return name in options.mask or any(fnmatchcase(lowered, p.lower()) for p in patterns)


@cache
def tracking(model: type[models.Model]) -> Tracking:
    """Resolve ``model``'s options into the fields capture records."""
    options = _audited[model]
    patterns = conf.DEFAULT_MASKED_FIELDS + conf.get().MASKED_FIELDS
    chosen = [
        field
        for name, field in _selectable(model).items()
        if (options.fields is None or name in options.fields) and name not in options.exclude
    ]
    resolved = [
        (TrackedField(f.name, f.attname, _masked(f.name, options, patterns)), f.many_to_many)
        for f in chosen
    ]
    concrete = tuple(t for t, many in resolved if not many)
    return Tracking(
        label=model._meta.label_lower,
        fields=concrete,
        attnames=frozenset(t.attname for t in concrete),
        m2m=tuple(t for t, many in resolved if many),
    )


def clear_caches() -> None:
    """Forget resolved field lists (settings or registrations changed)."""
    tracking.cache_clear()
