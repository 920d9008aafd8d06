"""The decorators users write: ``@audited``, ``@after_save``, ``@after_delete`` and
``@counter_cache``. Each checks its arguments, records them in the registry and returns
what it decorates unchanged; ``AppConfig.ready()`` wires what they registered."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

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
    unmask: Iterable[str] = (),
    bulk: bool = True,
) -> Callable[[M], M]: ...


def audited(
    model: M | None = None,
    /,
    *,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    mask: Iterable[str] = (),
    unmask: Iterable[str] = (),
    bulk: bool = True,
) -> M | Callable[[M], M]:
    """Record every create, update and delete of the decorated model.

    Args:
        fields: record only these fields (default: every concrete and many-to-many field).
        exclude: never record these fields.
        mask: record that these fields changed, never their values. Fields named like
            ``password``, ``*token*`` and ``*secret*`` are masked without being listed.
        unmask: record these fields in clear although such a pattern matches them (a
            boolean ``is_secret``).
        bulk: record ``QuerySet.update()``, ``bulk_create()`` and ``bulk_update()`` too,
            one change per row (``update()`` reads the rows' old values first).

    Raises:
        TypeError: ``fields`` and ``exclude`` were both given, or a list is not a list of
            names, or the model is abstract. Unknown names, and a proxy model (decorate
            its concrete model), are reported by the system check ``auditq.E001``.
        ImproperlyConfigured: ``"auditq"`` is not in ``INSTALLED_APPS``.

    Example:
        >>> @audited(exclude=["updated_at"], mask=["card_token"])
        ... class Donation(models.Model): ...
    """
    if fields is not None and exclude:
        raise TypeError("@audited takes fields= or exclude=, not both.")
    if not isinstance(bulk, bool):
        raise TypeError(f"@audited(bulk=...) takes True or False, not {bulk!r}.")
    options = registry.AuditOptions(
        fields=_names("fields", fields),
        exclude=_names("exclude", exclude) or (),
        mask=_names("mask", mask) or (),
        unmask=_names("unmask", unmask) or (),
        bulk=bulk,
    )

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, models.Model)):
            raise TypeError(f"@audited decorates model classes, not {cls!r}.")
        if apps.apps_ready and not apps.is_installed("auditq"):
            # Nothing would ever connect the model: fail now, not silently forever.
            raise ImproperlyConfigured(
                f"@audited on {cls._meta.label} needs 'auditq' in INSTALLED_APPS: without "
                "it nothing records the model's changes."
            )
        if cls._meta.abstract:
            raise TypeError(f"@audited cannot decorate the abstract model {cls.__name__}.")
        # A proxy is registered so that the system check auditq.E001 can say what to do.
        registry.register(cls, options)
        return cls

    return decorate if model is None else decorate(model)


F = TypeVar("F", bound=Callable[..., Any])


def _handler_decorator(
    on: str,
    model: type[models.Model],
    when: Callable[[Any], Any] | None,
    queue: str | None,
    retries: int,
    backoff: float,
) -> Callable[[F], F]:
    decorator = f"@after_{on}"
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise TypeError(f"{decorator}() takes a model class first, not {model!r}.")
    if model._meta.abstract or model._meta.proxy:
        raise TypeError(f"{decorator}() follows concrete models; {model.__name__} is not one.")
    if when is not None and not callable(when):
        raise TypeError(f"{decorator}(when=...) takes a function of the instance, not {when!r}.")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ValueError(f"{decorator}(queue=...) takes a queue name, not {queue!r}.")
    registry.check_retries(retries, backoff, f"{decorator}()")

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"{decorator} decorates functions, not {func!r}.")
        name = f"{func.__module__}.{func.__qualname__}"
        if "<" in name:
            raise ValueError(
                f"{decorator} handlers must be module-level functions ({name} is not): "
                "workers find them by their dotted path."
            )
        registry.add_handler(
            registry.Handler(name, model, on, func, when, queue, retries, float(backoff))
        )
        if apps.models_ready:
            # Registered from an AppConfig.ready() (maybe after auditq's own): wire it now.
            registry.tracked_late(model)
        return func

    return decorate


def after_save(
    model: type[models.Model],
    *,
    when: Callable[[Any], Any] | None = None,
    queue: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
) -> Callable[[F], F]:
    """Run the decorated function in a worker after each create or update of ``model``.

    The function is called as ``func(instance, event)`` once the saving transaction has
    committed, with the instance as the database holds it now (re-read), and the change
    as an :class:`auditq.stream.events.Event`. Its database writes commit together with its
    ledger row, so a message delivered twice runs it once (effectively once); for calls
    to the outside world use ``event.id`` as the idempotency key. Register it from a
    module imported at start-up (``models.py`` or ``AppConfig.ready()``).

    Args:
        model: the model whose saves to follow (it becomes tracked, audited or not).
        when: ``when(instance)`` decides, in memory on the request path, whether this
            save needs the handler; nothing is sent when it is false.
        queue: Celery queue of the handler's runs (default ``AUDITQ["QUEUE"]``).
        retries: attempts after a failure before the run is marked failed.
        backoff: seconds before the first retry, doubled at each retry, with jitter.

    Raises:
        TypeError, ValueError: an argument is not what it should be (the message says).

    Example:
        >>> @after_save(Donation, when=lambda d: d.status == "succeeded")
        ... def mark_email_donated(donation, event): ...
    """
    return _handler_decorator("save", model, when, queue, retries, backoff)


def after_delete(
    model: type[models.Model],
    *,
    when: Callable[[Any], Any] | None = None,
    queue: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
) -> Callable[[F], F]:
    """Run the decorated function in a worker after each delete of ``model``.

    The function is called as ``func(event)``: the row is gone, ``event.changes`` holds
    its last values. ``when(instance)`` sees the instance as it was deleted. Otherwise
    as :func:`after_save`.

    Example:
        >>> @after_delete(Donation)
        ... def forget_donation(event): ...
    """
    return _handler_decorator("delete", model, when, queue, retries, backoff)


def counter_cache(
    fk_name: str,
    *,
    field: str,
    sum: str | None = None,
    when: Callable[[Any], Any] | None = None,
) -> Callable[[M], M]:
    """Keep ``parent.<field>`` equal to the number of children (or the sum of ``sum``).

    Declared on the child model, several times if need be. The request computes what each
    change adds to or takes from its parents, in memory; workers apply it, many changes of
    one parent in one ``UPDATE``, exactly once (see :mod:`auditq.consumers.counters`).

    Args:
        fk_name: the child's foreign key to the parent.
        field: the parent's numeric column that holds the count or the sum.
        sum: a numeric field of the child to add up instead of counting.
        when: ``when(child)``: which children count; evaluated in memory on the old and
            on the new state, so an update that flips it moves the count.

    Raises:
        TypeError: an argument is not a name, or the decorated class is not a concrete
            model. What the names point at is checked by ``auditq.E006`` to ``E009``.

    Example:
        >>> @counter_cache("fundraiser", field="raised_total", sum="amount",
        ...                when=lambda d: d.status == "succeeded")
        ... class Donation(models.Model): ...
    """
    for argument, value in (("fk_name", fk_name), ("field", field)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"@counter_cache({argument}=...) takes a field name, not {value!r}.")
    if sum is not None and (not isinstance(sum, str) or not sum):
        raise TypeError(f"@counter_cache(sum=...) takes a field name, not {sum!r}.")

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, models.Model)):
            raise TypeError(f"@counter_cache decorates model classes, not {cls!r}.")
        if cls._meta.abstract or cls._meta.proxy:
            raise TypeError(f"@counter_cache decorates concrete models; {cls.__name__} is not one.")
        registry.add_counter(registry.Counter(cls, fk_name, field, sum, when))
        if apps.ready:
            # Declared after auditq's ready() (a model imported late, a test): wire it now.
            registry.tracked_late(cls)
        return cls

    return decorate
