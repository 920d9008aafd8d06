"""Recompute counter caches from the children: the repair after raw SQL, bulk writes or a
counter declared on existing data. Safe while writes continue: the difference to one
consistent snapshot is written as one more delta (docs/counters.md)."""

from __future__ import annotations

import decimal
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from celery import shared_task
from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model

from auditq import registry
from auditq.backends import backend
from auditq.consumers import counters
from auditq.models import CounterDelta, Outbox
from auditq.stream.encoding import encode
from auditq.stream.events import Event, PayloadError, loads

DEFAULT_BATCH_SIZE = 500
"""Parents checked per snapshot."""

Key = tuple[str, str, str]
"""``(parent label, parent key as JSON text, column)``: how deltas name a counter."""


@dataclass(frozen=True)
class Wrong:
    """One counter that does not match its children."""

    parent: str
    """``app_label.modelname`` of the parent."""
    key: Any
    """The parent's key."""
    field: str
    """The counter column."""
    stored: decimal.Decimal
    """The column's value plus the deltas not yet applied."""
    true: decimal.Decimal
    """What the children add up to."""


def counters_for_labels(labels: Iterable[str], field: str | None = None) -> list[registry.Counter]:
    """The counters that ``labels`` (children that declare them or parents that hold
    them; every counter when empty) and ``field`` (a counter column) select.

    Raises:
        ValueError: a label names no model, or a model with no counters; or no counter
            writes ``field``.
    """
    declared = registry.counters()
    chosen: list[registry.Counter] = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            raise ValueError(f"{label!r} is not a model (use app_label.ModelName)") from None
        found = [
            c
            for c in declared
            if c.model is model or getattr(counters.foreign_key(c), "related_model", None) is model
        ]
        if not found:
            raise ValueError(f"{model._meta.label} neither declares nor holds a counter cache")
        chosen.extend(c for c in found if c not in chosen)
    if not labels:
        chosen = declared
    if field is not None:
        chosen = [c for c in chosen if c.field == field]
        if not chosen:
            raise ValueError(f"no counter cache of these models writes a column {field!r}")
    return chosen


def _parents(selected: Iterable[registry.Counter]) -> dict[type[Model], list[registry.Counter]]:
    """The selected counters by parent, with every other counter that writes the same
    columns (a column fed by two child models is only right with both)."""
    columns = {(counters.foreign_key(c).related_model, c.field) for c in selected}
    grouped: dict[type[Model], list[registry.Counter]] = defaultdict(list)
    for counter in registry.counters():
        parent = counters.foreign_key(counter).related_model
        if (parent, counter.field) in columns:
            grouped[parent].append(counter)
    return grouped


def recount(
    selected: Iterable[registry.Counter],
    using: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    progress: Callable[[int], object] = lambda n: None,
) -> list[Wrong]:
    """Check (and unless ``dry_run`` repair) the ``selected`` counters; return the wrong ones.

    ``progress(n)`` is called after each batch of ``n`` parents.
    """
    wrong: list[Wrong] = []
    for parent, chosen in _parents(selected).items():
        for keys in _batches(parent, chosen, using, batch_size):
            found = _check(parent, chosen, keys, using)
            wrong.extend(found)
            if found and not dry_run:
                _correct(found, using)
            progress(len(keys))
    if wrong and not dry_run:
        counters.flush(using)
    return wrong


@shared_task(name="auditq.tasks.recount", ignore_result=True, store_errors_even_if_ignored=True)
def recount_task(
    models: list[str] | None = None, field: str | None = None, using: str = DEFAULT_DB_ALIAS
) -> int:
    """Repair the counters of ``models`` (``app_label.Model`` labels; all by default), as
    ``auditq_recount`` does; return how many values were wrong. Schedule it with beat
    where rows are written around the ORM (``QuerySet.update()``, raw SQL)."""
    return len(recount(counters_for_labels(models or [], field), using))


def parents_to_check(selected: Iterable[registry.Counter], using: str) -> int:
    """How many parent rows :func:`recount` goes through (for a progress bar)."""
    return sum(parent._base_manager.using(using).count() for parent in _parents(selected))


def _plan(counter: registry.Counter) -> counters.Plan:
    return next(p for p in counters.plans(counter.model) if _same(p, counter))


def _same(plan: counters.Plan, counter: registry.Counter) -> bool:
    fk: Any = counters.foreign_key(counter)
    return (
        plan.fk == fk.attname
        and plan.field == fk.related_model._meta.get_field(counter.field).attname
    )


def _batches(
    parent: type[Model], chosen: list[registry.Counter], using: str, size: int
) -> Iterator[list[Any]]:
    """The parents' keys (what the children point at), ``size`` at a time, in order."""
    target = _plan(chosen[0]).target
    rows = parent._base_manager.using(using).order_by(target).values_list(target, flat=True)
    last = None
    while True:
        batch = list((rows if last is None else rows.filter(**{f"{target}__gt": last}))[:size])
        if not batch:
            return
        yield batch
        last = batch[-1]


def _check(
    parent: type[Model], chosen: list[registry.Counter], keys: list[Any], using: str
) -> list[Wrong]:

    plans = [_plan(counter) for counter in chosen]
    label = parent._meta.label_lower
    target = plans[0].target
    columns = sorted({plan.field for plan in plans})
    texts = {key: orjson.dumps(_json(key)).decode() for key in keys}
    wanted = {(label, texts[key], column) for key in keys for column in columns}
    with transaction.atomic(using=using):
        connection = connections[using]
        found = backend(connection)
        if found.supports_snapshot_isolation:
            found.read_one_snapshot(connection)
        stored: dict[Key, decimal.Decimal] = defaultdict(decimal.Decimal)
        for key, *values in (
            parent._base_manager.using(using)
            .filter(**{f"{target}__in": keys})
            .values_list(target, *columns)
        ):
            for column, value in zip(columns, values, strict=True):
                stored[label, texts[key], column] += decimal.Decimal(str(value or 0))
        for parent_label, key_text, column, delta in (
            CounterDelta.objects.using(using)
            .filter(parent=label, key__in=list(texts.values()), field__in=columns)
            .values_list("parent", "key", "field", "delta")
        ):
            stored[parent_label, key_text, column] += delta
        for payload, key in Outbox.objects.using(using).values_list("payload", "key"):
            for event in _readable(payload, key):
                for parent_label, key, column, delta in counters.carried(event):
                    slot = (parent_label, orjson.dumps(key).decode(), column)
                    if slot in wanted:
                        stored[slot] += decimal.Decimal(str(delta))
        true: dict[Key, decimal.Decimal] = defaultdict(decimal.Decimal)
        by_link: dict[tuple[type[Model], str], list[counters.Plan]] = defaultdict(list)
        for counter, plan in zip(chosen, plans, strict=True):
            by_link[counter.model, plan.fk].append(plan)
        for (model, fk), linked in by_link.items():
            for child in model._base_manager.using(using).filter(**{f"{fk}__in": keys}):
                values, holder = child.__dict__, functools.partial(_same_child, child)
                for plan in linked:
                    found = counters.contribution(plan, values, holder)
                    if found is not None:
                        slot = (label, orjson.dumps(_json(found[0])).decode(), plan.field)
                        true[slot] += decimal.Decimal(str(found[1]))
    by_text = {text: key for key, text in texts.items()}
    return [
        Wrong(label, by_text[key_text], column, stored[slot], true[slot])
        for slot in sorted(wanted)
        for _, key_text, column in [slot]
        if stored[slot] != true[slot]
    ]


def _readable(payload: str, key: str) -> list[Event]:
    """The events of an outbox row; none for a row no worker can read (set aside, or of
    another version): its deltas are not counted as on their way."""
    try:
        return loads(payload, key)
    except PayloadError:
        return []


def _same_child(child: Model) -> Model:
    return child


def _json(key: Any) -> Any:

    return encode(key)


def _correct(found: list[Wrong], using: str) -> None:

    CounterDelta.objects.using(using).bulk_create(
        CounterDelta(
            parent=w.parent,
            key=orjson.dumps(_json(w.key)).decode(),
            field=w.field,
            delta=w.true - w.stored,
        )
        for w in found
    )
