"""The request side: saves, deletes and many-to-many changes of tracked models become
changes, in memory, held for the commit (see docs/delivery.md).

| module | what it holds |
| --- | --- |
| ``shape`` | what a model's fields need, resolved once per model |
| ``snapshot`` | the values an instance was loaded with |
| ``json_text`` | a JSON column's text as the database sent it, for the snapshot |
| ``diff`` | a save's changes against the snapshot |
| ``receivers`` | Django's signals -> changes asked of each consumer |
| ``m2m`` | many-to-many changes |
| ``guards`` | the ``save_base()`` / ``delete()`` wrappers: the outbox row in the same transaction |
| ``bulk`` | ``QuerySet.update()``, ``bulk_create()``, ``bulk_update()``: one change per row |
"""

from __future__ import annotations

from typing import Any, cast

from django.apps import apps
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save

from auditq import registry
from auditq.capture import guards, m2m
from auditq.capture.json_text import keep_text
from auditq.capture.receivers import on_delete, on_save
from auditq.capture.snapshot import guard_from_db, guard_refresh


def connect(model: type[models.Model]) -> None:
    """Wire capture for one tracked model (called from ``AppConfig.ready``).

    Its proxies and multi-table children send their own signals: they are wired too, so a
    change to a row of a tracked table is recorded whichever class made it.
    """
    senders = [model, *(m for m in apps.get_models() if m is not model and issubclass(m, model))]
    for sender in senders:
        uid = f"auditq:{sender._meta.label_lower}"
        post_save.connect(on_save, sender=sender, dispatch_uid=uid, weak=False)
        post_delete.connect(on_delete, sender=sender, dispatch_uid=uid, weak=False)
    for name in registry.m2m_names(model):
        field: Any = model._meta.get_field(name)
        through = field.remote_field.through
        m2m_changed.connect(
            m2m.receiver(field),
            sender=through,
            dispatch_uid=f"auditq:m2m:{through._meta.label_lower}",
            weak=False,
        )
    for concrete in model._meta.concrete_fields:
        keep_text(concrete)
    if not getattr(model.save_base, guards.GUARDED, False):
        setattr(model, "save_base", guards.guard_save(model.save_base))  # noqa: B010
        setattr(model, "refresh_from_db", guard_refresh(model.refresh_from_db))  # noqa: B010
        setattr(model, "from_db", guard_from_db(model, cast(Any, model.from_db).__func__))  # noqa: B010
    if model.delete is models.Model.delete:
        # The one-statement delete stands in for Django's own delete() only: a delete()
        # of the model's or of a base class (a soft delete, a permission check, a file
        # removed after super().delete()) runs as written, and its changes are captured
        # by the signals like any other.
        setattr(model, "delete", guards.guard_delete(model.delete))  # noqa: B010
