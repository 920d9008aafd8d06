"""What was registered: ``@audited`` options and the consumers of the change stream.

The decorators only record options here; :func:`tracking` turns them into what capture
needs on every save of a *tracked* model (one that some consumer wants changes of),
cached per model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from typing import Any, TypeVar, cast

from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver

from auditq import conf
from auditq.protocols import Consumer as Consumer  # the seams, re-exported
from auditq.protocols import Runner as Runner
from auditq.protocols import Sweeper as Sweeper


@dataclass(frozen=True)
class AuditOptions:
    """The arguments given to ``@audited``."""

    fields: tuple[str, ...] | None
    """Field names to record; ``None`` records every concrete field."""
    exclude: tuple[str, ...]
    """Field names never recorded."""
    mask: tuple[str, ...]
    """Field names recorded as changed without their values."""
    unmask: tuple[str, ...] = ()
    """Field names recorded in clear although a default or ``MASKED_FIELDS`` pattern
    matches them (a boolean ``is_secret``)."""
    bulk: bool = True
    """Whether ``QuerySet.update()``, ``bulk_create()`` and ``bulk_update()`` are captured."""


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
    """Everything capture needs for one tracked model."""

    model: type[models.Model]
    """The model itself (concrete: a proxy's changes are its concrete model's)."""
    label: str
    """``app_label.modelname``: how payloads name the model."""
    fields: tuple[TrackedField, ...]
    """Concrete fields recorded on create, update and delete."""
    masked: tuple[TrackedField, ...]
    """Those of ``fields`` whose values are masked (handlers get them sealed)."""
    attnames: frozenset[str]
    """The attnames snapshotted at load: those of ``fields``, and every column of a
    model with counter caches."""
    m2m: tuple[TrackedField, ...]
    """Many-to-many fields recorded as added / removed keys."""
    consumers: tuple[Consumer, ...]
    """The consumers that want this model's changes."""
    bulk: bool
    """Whether bulk writes are captured (``@audited(bulk=False)`` turns them off)."""
    whole_rows: bool
    """Whether consumers read the whole instance on the request path (counters, handlers
    with ``when=``): a bulk ``update()`` then reads every column of its rows first."""


@dataclass(frozen=True)
class Handler:
    """One ``@after_save`` / ``@after_delete`` handler."""

    name: str
    """Its dotted path: how the outbox and ``CallbackRun`` name it."""
    model: type[models.Model]
    """The model whose changes it follows."""
    on: str
    """``"save"`` (creates and updates) or ``"delete"``."""
    func: Callable[..., Any]
    """The function: ``func(instance, event)`` after a save, ``func(event)`` after a delete."""
    when: Callable[[Any], Any] | None
    """Evaluated on the instance, in memory, on the request path; ``None``: always."""
    queue: str | None
    """Celery queue of its runs; ``None``: ``AUDITQ["QUEUE"]``."""
    retries: int
    """Attempts after the first one, before the run is marked failed."""
    backoff: float
    """Seconds before the first retry; doubled at each retry, with jitter."""


@dataclass(frozen=True)
class Counter:
    """One ``@counter_cache`` declared on a child model (checked by the system checks,
    resolved against the models by :mod:`auditq.consumers.counters`)."""

    model: type[models.Model]
    """The child model that declares it."""
    fk_name: str
    """The foreign key to the parent."""
    field: str
    """The parent's column that holds the count or the sum."""
    sum: str | None
    """The child's field to add up; ``None`` counts children."""
    when: Any
    """``when(child)``: which children count; ``None``: all of them."""


_audited: dict[type[models.Model], AuditOptions] = {}
_consumers: dict[str, Consumer] = {}
_handlers: dict[str, Handler] = {}
_counters: list[Counter] = []
_sweepers: list[Sweeper] = []
_runners: dict[str, Runner] = {}
_derived: list[Callable[[], None]] = []
_late: list[Callable[[type[models.Model]], None]] = []
_Cached = TypeVar("_Cached", bound=Any)


def derived(func: _Cached) -> _Cached:
    """Mark a ``functools.cache``'d function of models as derived from the registrations
    and settings: :func:`clear_caches` forgets its results (here and in capture)."""
    _derived.append(func.cache_clear)
    return func


ALL_FIELDS = AuditOptions(fields=None, exclude=(), mask=())
"""What a tracked model that is not ``@audited`` records: every field, default masks."""


def register(model: type[models.Model], options: AuditOptions) -> None:
    """Record that ``model`` is audited with ``options``."""
    _audited[model] = options
    clear_caches()


def check_retries(retries: Any, backoff: Any, where: str) -> None:
    """Refuse retry settings that are not a count and a positive number of seconds.

    Raises:
        ValueError: naming ``where`` and the argument.
    """
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
        raise ValueError(f"{where}: retries takes a whole number from 0 to 100, not {retries!r}.")
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, int | float)
        or not 0 < backoff <= 86400
    ):
        raise ValueError(f"{where}: backoff takes seconds, more than 0 and at most a day.")


def add_handler(handler: Handler) -> None:
    """Register a callback handler (replacing one of the same name)."""
    _handlers[handler.name] = handler
    clear_caches()


def remove_handler(name: str) -> None:
    """Unregister a handler (tests)."""
    _handlers.pop(name, None)
    clear_caches()


def handlers() -> list[Handler]:
    """Every registered handler."""
    return list(_handlers.values())


def handler(name: str) -> Handler | None:
    """The handler registered under ``name``, if any."""
    return _handlers.get(name)


@derived
@cache
def handlers_for(model: type[models.Model], on: str) -> tuple[Handler, ...]:
    """The handlers following ``model``'s saves (``on="save"``) or deletes."""
    return tuple(h for h in _handlers.values() if h.model is model and h.on == on)


def add_counter(counter: Counter) -> None:
    """Register a counter cache (replacing one on the same child, parent and column)."""
    _counters[:] = [
        c
        for c in _counters
        if (c.model, c.fk_name, c.field) != (counter.model, counter.fk_name, counter.field)
    ]
    _counters.append(counter)
    clear_caches()


def remove_counter(counter: Counter) -> None:
    """Unregister a counter cache (tests)."""
    if counter in _counters:
        _counters.remove(counter)
    clear_caches()


def counters() -> list[Counter]:
    """Every registered counter cache, in declaration order."""
    return list(_counters)


@derived
@cache
def counters_for(model: type[models.Model]) -> tuple[Counter, ...]:
    """The counter caches declared on ``model``."""
    return tuple(c for c in _counters if c.model is model)


def add_sweeper(sweep: Sweeper) -> None:
    """Have the relay call ``sweep(using, app, broker_connection)`` at each round."""
    if sweep not in _sweepers:
        _sweepers.append(sweep)


def sweepers() -> list[Sweeper]:
    """Every registered sweeper."""
    return list(_sweepers)


def add_runner(task: str, run: Runner) -> None:
    """Register what runs the rows of the Celery task named ``task`` in this process."""
    _runners[task] = run


def runner(task: str) -> Runner:
    """What runs a row of ``task`` here (:func:`add_runner`).

    Raises:
        LookupError: nothing registered runs that task (``auditq`` is not ready yet).
    """
    try:
        return _runners[task]
    except KeyError:
        raise LookupError(
            f"no runner for the task {task!r}: is 'auditq' installed and ready?"
        ) from None


def add_consumer(consumer: Consumer) -> None:
    """Register a consumer of the change stream (replacing one of the same name)."""
    _consumers[consumer.name] = consumer
    clear_caches()


def remove_consumer(name: str) -> None:
    """Unregister a consumer (tests)."""
    _consumers.pop(name, None)
    clear_caches()


def consumers() -> list[Consumer]:
    """Every registered consumer, in registration order."""
    return list(_consumers.values())


def tracked_models() -> list[type[models.Model]]:
    """Every model some consumer wants changes of, audited models first."""
    found = dict.fromkeys(_audited)
    for consumer in _consumers.values():
        found.update(dict.fromkeys(consumer.models()))
    return list(found)


def audited_models() -> dict[type[models.Model], AuditOptions]:
    """Return every audited model with its options."""
    return dict(_audited)


def is_audited(model: type[models.Model]) -> bool:
    """Tell whether ``model`` itself was decorated with ``@audited``."""
    return model in _audited


def m2m_names(model: type[models.Model]) -> list[str]:
    """Return the names of ``model``'s recorded many-to-many fields (settings not needed)."""
    options = _audited.get(model, ALL_FIELDS)
    return [
        f.name
        for f in model._meta.many_to_many
        if (options.fields is None or f.name in options.fields) and f.name not in options.exclude
    ]


def _selectable(model: type[models.Model]) -> dict[str, models.Field]:
    meta = model._meta
    return {f.name: f for f in (*meta.concrete_fields, *meta.many_to_many)}


def problems() -> list[tuple[type[models.Model], str, str]]:
    """Return ``(model, message, hint)`` for every unknown field name given to ``@audited``,
    and for every proxy it decorates."""
    found = []
    for model, options in _audited.items():
        if model._meta.proxy:
            concrete = cast(type[models.Model], model._meta.concrete_model)
            found.append(
                (
                    model,
                    f"@audited decorates the proxy model {model._meta.label}: its changes "
                    f"are rows of {concrete._meta.label}, recorded only if that is audited.",
                    f"Decorate {concrete.__name__} instead (and remove @audited from "
                    f"{model.__name__}): changes made through any of its proxies are "
                    "recorded on its trail.",
                )
            )
            continue
        known = _selectable(model)
        for argument in ("fields", "exclude", "mask", "unmask"):
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
    if name in options.unmask:
        return False
    return name in options.mask or any(fnmatchcase(lowered, p.lower()) for p in patterns)


@derived
@cache
def tracking(model: type[models.Model]) -> Tracking | None:
    """Resolve what capture does for ``model``; ``None`` when no consumer tracks it."""
    if model._meta.proxy:
        # A proxy writes its concrete model's rows: recorded as that model's changes.
        return tracking(cast(type[models.Model], model._meta.concrete_model))
    wanting = tuple(c for c in _consumers.values() if model in tuple(c.models()))
    if not wanting:
        return None
    options = _audited.get(model, ALL_FIELDS)
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
    attnames = {t.attname for t in concrete}
    if counters_for(model):
        # Counters compare the whole old and new state (``when`` may read any field).
        attnames.update(f.attname for f in model._meta.concrete_fields)
    return Tracking(
        model=model,
        label=model._meta.label_lower,
        fields=concrete,
        masked=tuple(t for t in concrete if t.masked),
        attnames=frozenset(attnames),
        m2m=tuple(t for t, many in resolved if many),
        consumers=wanting,
        bulk=options.bulk,
        whole_rows=bool(counters_for(model))
        or any(h.when is not None for h in _handlers.values() if h.model is model),
    )


def on_tracked_late(wire: Callable[[type[models.Model]], None]) -> None:
    """Call ``wire(model)`` for a model registered after start-up (a handler declared in an
    ``AppConfig.ready()`` that runs after auditq's, a test): ``ready()`` wires capture."""
    if wire not in _late:
        _late.append(wire)


def tracked_late(model: type[models.Model]) -> None:
    """``model`` was registered after start-up: wire it now (see :func:`on_tracked_late`)."""
    for wire in _late:
        wire(model)


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting == "AUDITQ":
        clear_caches()


def clear_caches() -> None:
    """Forget everything derived from the registrations and settings (they changed)."""
    for clear in _derived:
        clear()
