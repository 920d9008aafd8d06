"""The wrappers around ``save_base()`` and ``delete()``: an outbox row in the same transaction."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, cast

from django.db import connections, models, router, transaction
from django.db.models import sql
from django.db.models.deletion import DO_NOTHING, get_candidate_relations_to_delete
from django.db.models.signals import post_delete, pre_delete

from auditq import registry
from auditq.backends import backend
from auditq.capture.diff import diff, every_value
from auditq.capture.receivers import WRITES, ask_consumers, delete_change, object_repr, on_delete
from auditq.capture.shape import Shape, concrete, shape_of, snapshot_attnames, tracked_parents
from auditq.capture.snapshot import SHARED, load_unknown
from auditq.stream import outbox
from auditq.stream.encoding import encode
from auditq.stream.events import PK_SLOT, Change

GUARDED = "__auditq_guard__"


@functools.cache
def _statement_prefixes(model: type[models.Model], using: str) -> tuple[str, str, str]:
    table = connections[using].ops.quote_name(model._meta.db_table)
    return (f"INSERT INTO {table} ", f"UPDATE {table} SET ", f"DELETE FROM {table} WHERE ")


def _save_statement_change(
    tracking: registry.Tracking, instance: models.Model, update_fields: Any, connection: Any
) -> Callable[[str], Change | None]:
    """Build the change of a save from its statement (``I``nsert or ``U``pdate)."""

    def build(verb: str) -> Change | None:
        describe = functools.partial(object_repr, instance, connection)
        if verb == "U":
            changes = diff(tracking, instance, update_fields)
            return ask_consumers(
                tracking, instance, encode(instance.pk), describe, "update", changes
            )
        if instance.pk is not None and not hasattr(instance.pk, "resolve_expression"):
            changes = every_value(tracking, instance, deleted=False)
            return ask_consumers(
                tracking, instance, encode(instance.pk), describe, "create", changes
            )
        # The database assigns the key in this statement (a sequence, a db_default): write
        # a slot where it goes (in the changes and in the repr, if the repr shows it); the
        # statement keeps the key beside the payload and the worker fills the slot.
        attname = instance._meta.pk.attname
        unset = instance.__dict__[attname]
        instance.__dict__[attname] = PK_SLOT
        try:
            changes = every_value(tracking, instance, deleted=False)
            repr_ = object_repr(instance, connection)
        finally:
            instance.__dict__[attname] = unset
        return ask_consumers(tracking, instance, PK_SLOT, lambda: repr_, "create", changes)

    return build


def guard_save(save_base: Callable) -> Callable:
    """Give a tracked save its outbox row in the same transaction.

    In autocommit mode a plain ``save()`` commits before ``post_save`` is sent: without
    this the change and its outbox row would commit separately, and a crash between them
    would lose the change. On PostgreSQL the row's own statement writes the outbox row
    (one round trip, no transaction block); elsewhere the save runs in a transaction.
    """

    @functools.wraps(save_base)
    def guarded(self: models.Model, *args: Any, **kwargs: Any) -> Any:
        model = type(self)
        tracking = registry.tracking(model)
        if (tracking is None and not tracked_parents(model)) or kwargs.get(
            "raw", args[0] if args else False
        ):
            return save_base(self, *args, **kwargs)
        using = kwargs.get("using") or router.db_for_write(model, instance=self)
        load_unknown(self, using, snapshot_attnames(model))
        connection = connections[using]
        alone = outbox.alone(connection)
        shape = shape_of(model)
        returning = _decided_by_database(self, shape)
        if returning:
            # Generated columns change with the row, and F() expressions are computed by
            # the UPDATE: it returns their new values (Django 5.2 leaves the instance's
            # stale), so diffs and snapshots stay true. An INSERT returns db_default
            # values itself; post_save sees them.
            reader = _generated_reader(self, returning, connection)
            # Not connection.execute_wrapper(): it pops the last wrapper, which may be one
            # installed meanwhile (auditq's own outbox hook on a new connection).
            connection.execute_wrappers.append(reader)
            try:
                with transaction.atomic(using=using, savepoint=False) if alone else nullcontext():
                    return save_base(self, *args, **kwargs)
            finally:
                connection.execute_wrappers.remove(reader)
        if not alone:
            return save_base(self, *args, **kwargs)
        if tracking is None or not backend(connection).supports_statement_outbox or shape.parents:
            # Elsewhere (or with parent tables to write too) the save gets a transaction.
            with transaction.atomic(using=using, savepoint=False):
                return save_base(self, *args, **kwargs)
        found = outbox.state(connection)
        previous, outer = found.write, WRITES.get(id(self))  # outer: a save in post_save
        write = found.write = WRITES[id(self)] = outbox.Write(
            self,
            _statement_prefixes(model, using)[:2],
            _save_statement_change(tracking, self, kwargs.get("update_fields"), connection),
        )
        try:
            result = save_base(self, *args, **kwargs)
        finally:
            found.write = previous
            if outer is None:
                del WRITES[id(self)]
            else:
                WRITES[id(self)] = outer
        if write.recorded:
            outbox.committed(connection)
        return result

    setattr(guarded, GUARDED, True)
    return guarded


@functools.cache
def _deletes_alone(model: type[models.Model]) -> bool:
    """Whether Django would delete ``model``'s rows one statement at a time, were it not
    for auditq's own ``post_delete`` receiver (the collector's fast path)."""
    meta = concrete(model)._meta
    return (
        not meta.parents
        and all(
            related.field.remote_field.on_delete is DO_NOTHING
            for related in cast(Iterable[Any], get_candidate_relations_to_delete(meta))
        )
        and not any(hasattr(field, "bulk_related_objects") for field in meta.private_fields)
    )


def _only_auditq_listens(model: type[models.Model]) -> bool:
    try:
        for signal in (pre_delete, post_delete):
            sync, asynchronous = signal._live_receivers(model)
            if any(receiver is not on_delete for receiver in (*sync, *asynchronous)):
                return False
    except (AttributeError, TypeError, ValueError):  # another Django: be conservative
        return False
    return True


def guard_delete(delete: Callable) -> Callable:
    """Delete a lone tracked instance in one statement, as Django does an untracked one.

    Installed over Django's own ``Model.delete`` only, never over a user's override.

    Django's collector takes its one-statement path only for models without delete
    signal receivers, so auditq's own ``post_delete`` receiver (needed for cascades)
    would cost every tracked delete a transaction block.
    """

    @functools.wraps(delete)
    def guarded(self: models.Model, using: str | None = None, keep_parents: bool = False) -> Any:
        model = type(self)
        tracking = registry.tracking(model)
        if (
            tracking is None
            or keep_parents
            or self.pk is None
            or not _deletes_alone(model)
            or not _only_auditq_listens(model)
        ):
            return delete(self, using=using, keep_parents=keep_parents)
        using = using or router.db_for_write(model, instance=self)
        connection = connections[using]
        change = delete_change(tracking, self, connection)
        alone = outbox.alone(connection)
        if change is None:
            count = _delete_row(model, self.pk, using)
        elif alone and backend(connection).supports_statement_outbox:  # the statement writes it
            found = outbox.state(connection)
            previous = found.write
            prefix = _statement_prefixes(model, using)[2]
            write = found.write = outbox.Write(self, (prefix,), lambda verb: change)
            try:
                count = _delete_row(model, self.pk, using)
            finally:
                found.write = previous
            if write.recorded:
                outbox.committed(connection)
        else:
            with transaction.atomic(using=using, savepoint=False) if alone else nullcontext():
                count = _delete_row(model, self.pk, using)
                if count:
                    outbox.add(connection, change)
        setattr(self, model._meta.pk.attname, None)
        return count, {model._meta.label: count}

    return guarded


def _delete_row(model: type[models.Model], pk: Any, using: str) -> int:
    with transaction.mark_for_rollback_on_error(using):
        return sql.DeleteQuery(model).delete_batch([pk], using)


def _decided_by_database(
    instance: models.Model, shape: Shape
) -> dict[str, tuple[models.Field, ...]]:
    """The columns whose new value only the database knows after this save, by table:
    generated columns, and fields the save sets to an expression."""
    values = instance.__dict__
    found = None
    for field in shape.settable:
        value = values.get(field.attname)
        if type(value) not in SHARED and hasattr(value, "resolve_expression"):
            found = found or {table: list(columns) for table, columns in shape.returning.items()}
            table = cast(Any, field.model)._meta.db_table
            found.setdefault(table, []).append(field)
    if found is None:
        return shape.returning
    return {table: tuple(columns) for table, columns in found.items()}


def _generated_reader(
    instance: models.Model, returning: dict[str, tuple[models.Field, ...]], connection: Any
) -> Callable[..., Any]:
    """An execute wrapper that has the instance's ``UPDATE`` return ``returning``'s columns
    and sets them on the instance (PostgreSQL and SQLite have ``RETURNING``)."""
    quote = connection.ops.quote_name
    prefixes = {f"UPDATE {quote(table)} SET ": fields for table, fields in returning.items()}

    def execute(run: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        fields = None if many else next((f for p, f in prefixes.items() if sql.startswith(p)), None)
        if fields is None or not connection.features.can_return_columns_from_insert:
            return run(sql, params, many, context)
        columns = ", ".join(quote(f.column) for f in fields)
        result = run(f"{sql} RETURNING {columns}", params, many, context)
        # Read every row now: SQLite counts the updated rows only once they are read.
        rows = context["cursor"].fetchall()
        if rows:
            for field, value in zip(fields, rows[0], strict=True):
                column = cast(Any, field).cached_col
                converters = connection.ops.get_db_converters(column)
                for convert in (*converters, *column.get_db_converters(connection)):
                    value = convert(value, column, connection)
                instance.__dict__[field.attname] = value
        return result

    return execute
