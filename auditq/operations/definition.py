"""The operation DSL: ``Operation`` (branches of step functions), ``Step`` (what a step
function receives) and ``retry_policy``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from django.db import IntegrityError, router, transaction
from django.db.models import Model

from auditq import registry
from auditq.operations import catalog
from auditq.operations.catalog import OperationError
from auditq.operations.publishing import publish_after_commit
from auditq.stream.context import current, resolve_actor

if TYPE_CHECKING:
    from auditq.models import OperationRun


RETRIES = 3
"""Default attempts after the first failed one, before a run is marked failed."""

BACKOFF = 2.0
"""Default seconds before the first retry; doubled at each retry, with jitter."""

LEASE = 300.0
"""Default seconds a step may run before another worker may take it over."""

StepFunction = Callable[["Step"], Any]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RetryPolicy:
    """A step's own retry settings (see :func:`retry_policy`)."""

    retries: int
    """Attempts after the first failed one, before the run is marked failed."""
    backoff: float
    """Seconds before the first retry; doubled at each retry, with jitter."""


@overload
def retry_policy(func: F, /) -> F: ...
@overload
def retry_policy(*, retries: int = RETRIES, backoff: float = BACKOFF) -> Callable[[F], F]: ...
def retry_policy(func: Any = None, /, *, retries: int = RETRIES, backoff: float = BACKOFF) -> Any:
    """Give one step its own retries and back-off, whatever its operation's say.

    Returns the function unchanged (it only gains an ``auditq_retry_policy`` attribute).

    Example:
        >>> @retry_policy(retries=10, backoff=30)
        ... def charge_card(step): ...
    """
    registry.check_retries(retries, backoff, "@retry_policy")

    def decorate(step_function: F) -> F:
        if not callable(step_function):
            raise TypeError(f"@retry_policy decorates step functions, not {step_function!r}.")
        step_function.auditq_retry_policy = RetryPolicy(retries, float(backoff))  # type: ignore[attr-defined]
        return step_function

    return decorate if func is None else decorate(func)


def dotted_path(func: Callable[..., Any]) -> str:
    """The name a step is stored under: ``module.qualname``."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def check_json(value: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is JSON data (dicts with string keys, lists,
    strings, finite numbers, booleans, ``None``), naming where the bad value is."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot hold.")
        return
    if isinstance(value, Model):
        raise TypeError(
            f"{where} is a model instance ({type(value).__name__} {value.pk!r}): pass its "
            f"key instead (e.g. {type(value).__name__.lower()}_id={value.pk!r}) and load "
            "the row in the step, so that the step sees the row as it is then."
        )
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}: JSON keys are strings.")
            check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which is not JSON-safe: pass strings, "
        "numbers, booleans, None, lists and dicts (a Decimal or a date as a string)."
    )


def _as_json(value: Any) -> Any:
    """The value as it reads back from the database (tuples become lists)."""
    if isinstance(value, list | tuple):
        return [_as_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _as_json(item) for key, item in value.items()}
    return value


class Operation:
    """A multi-step job: ``main`` and other branches, each a list of step functions.

    A step is a module-level function taking a :class:`Step`. Steps of ``main`` run in
    order; a step may ``jump_to`` another branch (or back to a step of ``main``); a
    branch that runs out ends the run. Operations are registered by name when they are
    created, so define them at module level in a module imported at start-up (say, from
    your ``AppConfig.ready()``).

    Args:
        name: a stable, unique name (stored on every run).
        main: the steps that run first, in order.
        retries: attempts after a failed one before the run is marked failed.
        backoff: seconds before the first retry; doubled at each retry, with jitter.
        lease: seconds a step may run before the run is taken over by another worker
            (as if its worker had died): make it longer than the step ever takes.
        queue: the Celery queue of its steps; default ``AUDITQ["QUEUE"]``.
        **branches: the other branches, by name.

    Example:
        >>> fulfillment = Operation(
        ...     "subscriptions.fulfillment",
        ...     main=[charge_card, send_receipt],
        ...     red=[setup_red_subscription],
        ... )
        >>> run = fulfillment.start(subscription_id=sub.id)
    """

    def __init__(
        self,
        name: str,
        main: Sequence[StepFunction],
        *,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        lease: float = LEASE,
        queue: str | None = None,
        **branches: Sequence[StepFunction],
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"Operation() takes a name of 1 to 200 characters, not {name!r}.")
        where = f"Operation({name!r})"
        registry.check_retries(retries, backoff, where)
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease <= 86400:
            raise ValueError(f"{where}: lease takes seconds, more than 0 and at most a day.")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ValueError(f"{where}: queue takes a queue name, not {queue!r}.")
        self.name = name
        self.retries = retries
        self.backoff = float(backoff)
        self.lease = float(lease)
        self.queue = queue
        self.branches: dict[str, tuple[StepFunction, ...]] = {}
        self.paths: dict[str, tuple[str, ...]] = {}
        for branch, steps in {"main": main, **branches}.items():
            if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
                raise ValueError(f"{where}: branch {branch!r} takes a non-empty list of steps.")
            for func in steps:
                path = dotted_path(func)
                if not callable(func) or "<" in path or len(path) > 255:
                    raise ValueError(
                        f"{where}: {func!r} in branch {branch!r} is not a module-level "
                        "function: steps are stored by their dotted path."
                    )
            self.branches[branch] = tuple(steps)
            self.paths[branch] = tuple(dotted_path(func) for func in steps)
        catalog.register(self)

    def __repr__(self) -> str:
        return f"<Operation {self.name!r}>"

    def start(self, *, key: str | None = None, **params: Any) -> OperationRun:
        """Create a run and publish its first step once the transaction commits.

        The run keeps the current audit context's actor: every step's changes are
        recorded as made by that user, whichever worker runs it, and when.

        Args:
            key: a deduplication key: a second ``start()`` with the same key returns the
                first run (whatever its status) instead of starting another.
            **params: JSON data the steps read with ``step.get(name)``; pass model
                instances by their key.

        Returns:
            The ``OperationRun`` (``pending``), or the existing run with that ``key``.

        Raises:
            TypeError: a parameter is not JSON data (a model instance, a Decimal...).
        """
        from auditq.models import OperationRun  # auditq/__init__ exports Operation: no models yet

        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
            raise ValueError(f"{self.name}.start(key=...) takes 1 to 255 characters, not {key!r}.")
        for name, value in params.items():
            check_json(value, f"{self.name}.start() argument {name!r}")
        using = router.db_for_write(OperationRun)
        actor_id, actor_repr = resolve_actor(current().actor)
        run = OperationRun(
            name=self.name,
            actor_id=actor_id,
            actor_repr=actor_repr,
            key=key or "",
            params=_as_json(params),
            branch="main",
            position=0,
            step=self.paths["main"][0],
        )
        try:
            # The unique constraint decides, not a look first: two starts racing with
            # the same key make one run (the loser waits for the winner's commit).
            with transaction.atomic(using=using):
                run.save(using=using, force_insert=True)
        except IntegrityError:
            if key is None:
                raise
            return OperationRun.objects.using(using).get(name=self.name, key=key)
        publish_after_commit([run.pk], using)
        return run

    def locate(self, branch: str, path: str, position: int | None = None) -> int:
        """The index of step ``path`` in ``branch`` (``position`` first, if it matches).

        Raises:
            OperationError: no such branch, or no such step in it.
        """
        paths = self.paths.get(branch)
        if paths is None:
            raise OperationError(
                f"operation {self.name!r} has no branch {branch!r} "
                f"(its branches: {', '.join(self.paths)})."
            )
        if position is not None and position < len(paths) and paths[position] == path:
            return position
        if path not in paths:
            raise OperationError(
                f"step {path} is not in branch {branch!r} of operation {self.name!r} "
                "(renamed, moved or removed?)."
            )
        return paths.index(path)

    def policy(self, func: StepFunction) -> RetryPolicy:
        """The step's :func:`retry_policy`, else the operation's retries and back-off."""
        own = getattr(func, "auditq_retry_policy", None)
        return own if isinstance(own, RetryPolicy) else RetryPolicy(self.retries, self.backoff)


class Step:
    """What a step function receives: the run's data, and where to go next.

    ``get`` (``None`` when missing) and ``step[key]`` (``KeyError`` when missing) see the
    arguments given to ``start()`` and every value set by earlier steps (a value set with
    the same name wins); ``set`` keeps a value for the steps after this
    one: it is saved when this step succeeds, with this step's own writes.
    """

    def __init__(self, run: OperationRun, operation: Operation) -> None:
        self.operation = operation
        self.run_id: int = run.pk
        """The run's key: a good idempotency key for calls to other systems."""
        self.attempt: int = run.attempts
        """1 for this step's first attempt, 2 for its first retry..."""
        self.branch: str = run.branch
        """The branch this step was started from."""
        self.values: dict[str, Any] = dict(run.values)
        self._params: dict[str, Any] = dict(run.params)
        self.next: tuple[str, int] | None = None
        """Where ``jump_to`` points; ``None``: the next step of this branch."""
        self.reported: tuple[int, int | None] | None = None
        """What ``progress`` was last told: ``(done, total)``; ``None``: nothing new."""

    def get(self, key: str, default: Any = None) -> Any:
        """A value set by an earlier step, else the ``start()`` argument of that name,
        else ``default``: like ``dict.get``, it never raises, so an optional argument
        needs no ``default``. ``step[key]`` is the strict form.
        """
        if key in self.values:
            return self.values[key]
        return self._params.get(key, default)

    def __getitem__(self, key: str) -> Any:
        """Like :meth:`get`, for a value the step cannot do without.

        Raises:
            KeyError: neither an earlier step nor ``start()`` gave ``key`` (the message
                names those that did).
        """
        if key in self.values:
            return self.values[key]
        if key in self._params:
            return self._params[key]
        known = ", ".join(sorted({*self.values, *self._params})) or "none"
        raise KeyError(
            f"{key!r} is neither a start() argument nor a value set by a step (known: {known})."
        )

    def __contains__(self, key: object) -> bool:
        """Whether an earlier step or ``start()`` gave ``key``."""
        return key in self.values or key in self._params

    def set(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON data) under ``key`` for later steps and for the admin.

        Raises:
            TypeError: the value is not JSON data.
        """
        if not isinstance(key, str) or not key:
            raise TypeError(f"step.set() takes a string key, not {key!r}.")
        check_json(value, f"step.set({key!r}) value")
        self.values[key] = _as_json(value)

    def jump_to(self, branch: str, step: StepFunction | None = None) -> None:
        """Make ``branch`` (its first step, or ``step``) the next step; this step goes on.

        Raises:
            OperationError: the branch, or the step in it, does not exist (the run fails).
        """
        if step is None:
            self.operation.locate(branch, self.operation.paths.get(branch, ("",))[0])
            self.next = (branch, 0)
        else:
            self.next = (branch, self.operation.locate(branch, dotted_path(step)))

    def progress(self, done: int, total: int | None = None) -> None:
        """Report how far the run is: ``done`` of ``total`` (``None``: the total last
        reported). Saved with this step's success, so the run's page and the dashboard
        show it once the step commits: a long job reports as it goes by re-entering one
        step in chunks (``step.jump_to(step.branch, this_step)``).

        Raises:
            ValueError: ``done`` or ``total`` is not a whole number of 0 or more.
        """
        for name, value in (("done", done), ("total", total)):
            if value is None and name == "total":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"step.progress() takes whole numbers of 0 or more: {name}={value!r}."
                )
        self.reported = (done, total)
