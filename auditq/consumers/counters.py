"""Consumer: ``@counter_cache`` columns, kept by workers, coalesced, exact.

A change carries its deltas (computed in memory on the old and the new state); the worker
writes them as ``CounterDelta`` rows, and a flush applies each parent's total in one
``UPDATE`` at most once per ``COUNTER_DELAY_SECONDS``. The flush and ``protect()``:
docs/counters.md."""

from __future__ import annotations

import datetime
import decimal
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from django.apps import apps
from django.db import connections, models, transaction
from django.db.models import F, Model, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from auditq import conf, registry
from auditq.delivery import broker
from auditq.models import CounterDelta
from auditq.stream.context import AuditContext
from auditq.stream.encoding import encode
from auditq.stream.events import Event

logger = logging.getLogger("auditq")

FLUSH = "auditq.tasks.flush_counters"
FLUSH_BATCH = 5000
"""Pending deltas claimed per flush transaction."""
NUMERIC = (models.IntegerField, models.DecimalField, models.FloatField)
"""Field classes a counter column or a summed field may be (integers include the
small, big and positive kinds)."""


@dataclass(frozen=True)
class Plan:
    """One counter resolved against its models: what capture and flush need."""

    parent: str
    """``app_label.modelname`` of the parent."""
    fk: str
    """The child's attname holding the parent's key (``fundraiser_id``)."""
    target: str
    """The parent's attname the foreign key points at (its primary key, or ``to_field``)."""
    field: str
    """The parent's counter column (attname)."""
    amount: str | None
    """The child's attname to add up; ``None`` counts."""
    when: Callable[[Any], Any] | None
    number: Callable[[Any], Any] | None = None
    """The summed field's ``to_python()``: an instance may hold what Django accepted
    (``amount="5.00"``, converted only for the SQL), and a sum needs its number."""


@registry.derived
@functools.cache
def plans(model: type[Model]) -> tuple[Plan, ...]:
    """The counters declared on ``model``, resolved (after the checks passed)."""
    found = []
    for counter in registry.counters_for(model):
        fk: Any = model._meta.get_field(counter.fk_name)
        parent = fk.related_model
        summed: Any = model._meta.get_field(counter.sum) if counter.sum else None
        found.append(
            Plan(
                parent=parent._meta.label_lower,
                fk=fk.attname,
                target=fk.target_field.attname,
                field=_attname(parent, counter.field),
                amount=summed.attname if summed else None,
                when=counter.when,
                number=summed.to_python if summed else None,
            )
        )
    return tuple(found)


def _attname(model: type[Model], name: str) -> str:
    field: Any = model._meta.get_field(name)
    return field.attname


@registry.derived
@functools.cache
def parent_fields(parent: type[Model]) -> dict[str, str]:
    """``{counter column: attname its children's keys point at}`` for a parent model."""
    label = parent._meta.label_lower
    return {
        plan.field: plan.target
        for model in dict.fromkeys(counter.model for counter in registry.counters())
        for plan in plans(model)
        if plan.parent == label
    }


def _state(instance: Model, values: Mapping[str, Any]) -> Model:
    """An instance of the same model holding ``values`` (for ``when`` on the old state)."""
    model = type(instance)
    other = model.__new__(model)
    other.__dict__.update(values)
    return other


def contribution(plan: Plan, values: Mapping[str, Any], holder: Callable[[], Model]) -> Any:
    """``(parent key, amount)`` a child with ``values`` adds to ``plan``'s counter, or
    ``None``; ``holder()`` gives the child as an instance, for ``when``."""
    key = values.get(plan.fk)
    if key is None or (plan.when is not None and not plan.when(holder())):
        return None
    if plan.amount is None:
        return key, 1
    amount = values.get(plan.amount)
    if amount is None:
        return None
    # Raises ValidationError for what is no number at all: capture logs it and goes on.
    return key, amount if plan.number is None else plan.number(amount)


def deltas(
    instance: Model, action: str, model: type[Model], loaded: Mapping[str, Any]
) -> list[list[Any]]:
    """``[[parent, key, column, delta], …]`` for one change of ``instance`` (no queries):
    of the counters declared on ``model``: the instance's concrete model, or a multi-table
    ancestor, for the ancestor's row of a child's save.

    The old state is ``loaded``, the snapshot of what the database held; the new one the
    instance.
    """
    current = instance.__dict__
    states: list[tuple[Mapping[str, Any], Callable[[], Model], int]] = []
    if action != "create":
        old_values = {**current, **loaded}
        states.append((old_values, functools.cache(lambda: _state(instance, old_values)), -1))
    if action != "delete":
        states.append((current, lambda: instance, 1))
    totals: dict[tuple[str, Any, str], Any] = {}
    for plan in plans(model):
        for values, holder, sign in states:
            found = contribution(plan, values, holder)
            if found is not None:
                slot = (plan.parent, found[0], plan.field)
                totals[slot] = totals.get(slot, 0) + sign * found[1]
    return [
        [parent, encode(key), field, encode(total)]
        for (parent, key, field), total in totals.items()
        if total
    ]


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key  # composite keys are lists


def _plain(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


def carried(event: Event) -> list[list[Any]]:
    """The ``[parent, key, column, delta]`` deltas an event carries for the counters."""
    return list(event.consumers.get(CountersConsumer.name, ()))


class CountersConsumer:
    """Keeps the columns declared with ``@counter_cache``."""

    name = "counters"

    def models(self) -> Iterable[type[Model]]:
        """Every model that declares a counter."""
        return {counter.model for counter in registry.counters()}

    def capture(
        self,
        model: type[Model],
        instance: Model | None,
        action: str,
        changes: Mapping[str, Any],
        context: AuditContext,
        loaded: Mapping[str, Any],
    ) -> Any:
        """The change's deltas, ``None`` when it moves no counter."""
        if instance is None or not registry.counters_for(model):
            return None
        return deltas(instance, action, model, loaded) or None

    def squash(self, earlier: Any, later: Any, action: str, changes: Mapping[str, Any]) -> Any:
        """Both changes' deltas, added up: a counter moves by what the transaction did."""
        totals: dict[tuple[str, Any, str], decimal.Decimal] = {}
        exact = True
        for parent, key, field, delta in [*(earlier or ()), *(later or ())]:
            slot = (parent, _hashable(key), field)
            totals[slot] = totals.get(slot, decimal.Decimal(0)) + decimal.Decimal(str(delta))
            exact = exact and isinstance(delta, int)
        return [
            [parent, _plain(key), field, int(total) if exact else encode(total)]
            for (parent, key, field), total in totals.items()
            if total
        ] or None

    def record(self, events: Sequence[Event], using: str) -> None:
        """Write the events' deltas, added up per parent and column; flush them soon."""

        totals: dict[tuple[str, str, str], decimal.Decimal] = defaultdict(decimal.Decimal)
        for event in events:
            for parent, key, field, delta in carried(event):
                _check_delta(parent, key, field)
                totals[parent, orjson.dumps(key).decode(), field] += decimal.Decimal(str(delta))
        CounterDelta.objects.using(using).bulk_create(
            CounterDelta(parent=parent, key=key, field=field, delta=delta)
            for (parent, key, field), delta in totals.items()
            if delta
        )
        transaction.on_commit(lambda: flush_soon(using), using=using)


def _check_delta(parent: str, key: Any, field: str) -> None:
    """Refuse a delta the flush could not apply (it would stop every flush after it): an
    unknown parent, a column that is not one of its counters, a key of the wrong kind.

    Raises:
        LookupError, ValueError, ValidationError: the outbox row is set aside.
    """
    model = cast(type[Model], apps.get_model(parent))
    targets = parent_fields(model)
    if field not in targets:
        raise ValueError(f"{parent}.{field} is not a counter cache column")
    target = next(f for f in model._meta.concrete_fields if f.attname == targets[field])
    target.run_validators(target.to_python(key))  # an integer beyond the column's range


_next_flush: dict[str, float] = {}


def flush_soon(using: str) -> None:
    """Have a worker flush in ``COUNTER_DELAY_SECONDS``, unless this process already did.

    The delay is what coalesces: every delta recorded meanwhile, by any worker, goes into
    the same ``UPDATE``. A lost flush is made up by the next one or by the relay's sweep.
    """

    settings = conf.get()
    try:
        app = broker.celery_app()
        if broker.eager(app):  # tests and scripts: flush here and now
            flush(using)
            return
        now = time.monotonic()
        if _next_flush.get(using, 0.0) > now:
            return
        delay = settings.COUNTER_DELAY_SECONDS
        _next_flush[using] = now + delay
        broker.send(FLUSH, (using,), app=app, queue=settings.QUEUE, countdown=delay)
    except Exception as exc:  # the relay's sweep flushes them
        _next_flush.pop(using, None)
        logger.warning("auditq: counter flush not scheduled yet (%s)", exc)


def _claim(
    using: str, limit: int, cutoff: datetime.datetime | None
) -> tuple[list[tuple[str, str, str, decimal.Decimal]], bool]:
    """Take up to ``limit`` pending deltas, skipping those another flush holds, and keep
    those of the parents whose oldest delta was recorded by ``cutoff`` (all if ``None``).

    Returns the kept deltas and whether the batch was full (more may wait).
    """

    rows = CounterDelta.objects.using(using)
    if connections[using].features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True)
    taken = list(
        rows.order_by("id").values_list("id", "parent", "key", "field", "delta", "created_at")[
            :limit
        ]
    )
    oldest: dict[tuple[str, str], datetime.datetime] = {}
    for _, parent, key, _, _, created_at in taken:
        oldest.setdefault((parent, key), created_at)  # in id order: the first is the oldest
    due = {slot for slot, at in oldest.items() if cutoff is None or at <= cutoff}
    kept = [row for row in taken if (row[1], row[2]) in due]
    CounterDelta.objects.using(using).filter(id__in=[row[0] for row in kept]).delete()
    return [row[1:5] for row in kept], len(taken) == limit and bool(kept)


def _typed(column: models.Field, total: decimal.Decimal) -> Any:
    if isinstance(column, models.IntegerField):
        return int(total)
    if isinstance(column, models.FloatField):
        return float(total)
    return total


def _apply(using: str, parent: str, key: str, totals: Mapping[str, decimal.Decimal]) -> int:
    """One ``UPDATE`` of one parent row for every column it has deltas for."""
    model = apps.get_model(parent)
    targets = parent_fields(cast(type[Model], model))
    changes: list[tuple[Any, None, Any]] = []
    target = None
    for attname, total in totals.items():
        column = model._meta.get_field(attname)
        add = Value(_typed(column, total), output_field=column)
        changes.append(
            (column, None, Coalesce(F(column.name), Value(0), output_field=column) + add)
        )
        target = targets.get(attname, target)
    if not changes or target is None:
        return 0
    target_field = next(f for f in model._meta.concrete_fields if f.attname == target)
    value = target_field.to_python(orjson.loads(key))
    # _update(), as Model.save() uses it, not update(): a counter is auditq's bookkeeping,
    # and its flush is no change for the trail, handlers or other counters to capture.
    model._base_manager.using(using).filter(**{target: value})._update(changes)
    return 1


def flush(using: str, older_than: float = 0.0, limit: int = FLUSH_BATCH) -> int:
    """Apply the pending deltas of every parent whose oldest delta is ``older_than``
    seconds old (0: every parent); return the number of parent ``UPDATE`` statements.

    Each batch claims deltas (skipping those another flush holds), applies them one
    ``UPDATE`` per parent in a fixed order, and deletes them, in one transaction. Waiting
    for a parent's oldest delta to age caps its ``UPDATE`` statements at one per
    ``older_than`` seconds, however many workers flush.
    """
    updates = 0
    more = True
    while more:
        cutoff = timezone.now() - datetime.timedelta(seconds=older_than) if older_than else None
        with transaction.atomic(using=using):
            claimed, more = _claim(using, limit, cutoff)
            grouped: dict[tuple[str, str], dict[str, decimal.Decimal]] = defaultdict(
                lambda: defaultdict(decimal.Decimal)
            )
            for parent, key, field, delta in claimed:
                grouped[parent, key][field] += delta
            for parent, key in sorted(grouped):
                totals = {field: total for field, total in grouped[parent, key].items() if total}
                updates += _apply(using, parent, key, totals)
    return updates


def flush_due(using: str) -> int:
    """The worker's flush (``auditq.tasks.flush_counters``): apply the parents that
    waited ``COUNTER_DELAY_SECONDS``, and come back for the younger ones."""

    updates = flush(using, older_than=conf.get().COUNTER_DELAY_SECONDS)
    if CounterDelta.objects.using(using).exists():
        flush_soon(using)
    return updates


def sweep(using: str, app: Any = None, connection: Any = None) -> int:
    """Flush deltas left pending well past their delay (a flush message was lost)."""
    delay = conf.get().COUNTER_DELAY_SECONDS
    oldest = pending(using)[1]
    if oldest is None or time.time() - oldest.timestamp() < delay * 4 + 2:
        return 0
    return flush(using, older_than=delay)


def pending(using: str) -> tuple[int, Any]:
    """How many deltas wait to be applied, and when the oldest was recorded."""

    rows = CounterDelta.objects.using(using)
    oldest = rows.order_by("created_at").values_list("created_at", flat=True).first()
    return (rows.count() if oldest is not None else 0), oldest


def protect_parents() -> None:
    """:func:`protect` every parent that a counter resolves to (``AppConfig.ready``);
    a counter that does not resolve is left to the system checks to report."""
    for counter in registry.counters():
        fk = foreign_key(counter)
        if fk is not None:
            protect(fk.related_model)


def foreign_key(counter: registry.Counter) -> Any:
    """The counter's foreign key field, or ``None`` when ``fk_name`` names none."""
    try:
        fk: Any = counter.model._meta.get_field(counter.fk_name)
    except Exception:
        return None
    return fk if fk.many_to_one and fk.concrete and not isinstance(fk.related_model, str) else None


def protect(parent: type[Model]) -> None:
    """Keep ``parent.save()`` from writing its counter columns back (stale values).

    A save of a loaded instance without ``update_fields`` becomes a save of every loaded
    column except the counters, the way Django saves an instance with deferred fields.
    """
    if getattr(parent.save, "_auditq_counters", False):
        return
    save = parent.save

    @functools.wraps(save)
    def guarded(self: Model, *args: Any, **kwargs: Any) -> Any:
        if (
            not args
            and kwargs.get("update_fields") is None
            and not kwargs.get("force_insert")
            and not self._state.adding
        ):
            counted = parent_fields(parent)
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key
                and field.attname not in counted
                and field.attname in self.__dict__
                and not getattr(field, "generated", False)
            ]
        return save(self, *args, **kwargs)

    guarded._auditq_counters = True  # type: ignore[attr-defined]
    parent.save = guarded  # type: ignore[method-assign]
