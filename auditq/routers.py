"""``AuditRouter``: the audit entries in a database of their own (``AUDITQ["DATABASE"]``).

Only ``AuditEntry``, ``AuditChain`` and ``AuditChainLane`` (the chains' heads, locked
and moved in the transaction that writes the entries) move. The outbox, the callback
runs, the counter deltas, the operation runs and the heartbeats stay in the database the
audited models are written to, because what they record must commit with those writes (a
handler's writes with its run, an outbox row with its change): the router says nothing
about them, so your other routers, or the default database, decide as before. The worker
commits a batch's entries in the audit database first and then clears its outbox rows; a
worker that dies in between leaves the rows, and their next delivery finds the entries
there already (unique ``event_id``): each change is recorded once.
"""

from __future__ import annotations

from typing import Any

from django.db import router

from auditq import conf

ENTRY = "auditq.auditentry"
AUDIT_TABLES = frozenset({ENTRY, "auditq.auditchain", "auditq.auditchainlane"})
"""The models that live in the audit database."""
CONTENT_TYPE = "contenttypes.contenttype"


def _label(model: Any) -> str:
    return str(model._meta.concrete_model._meta.label_lower)


class AuditRouter:
    """Routes ``AuditEntry`` and its chains to ``AUDITQ["DATABASE"]``; does nothing
    while it is unset.

    Add it to ``DATABASE_ROUTERS`` (after routers of your own, which decide first) and
    run ``migrate --database=<alias>``: that alias gets the entries' table (and
    ``contenttypes``', which the entries point at), never auditq's other tables, so no
    worker relays from it.
    """

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._route(model, hints, router.db_for_read)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._route(model, hints, router.db_for_write)

    @staticmethod
    def _route(model: Any, hints: dict[str, Any], again: Any) -> str | None:
        database = conf.get().DATABASE
        if database is None:
            return None
        label = _label(model)
        if label in AUDIT_TABLES:
            return database
        instance = hints.get("instance")
        if instance is not None and _label(instance) == ENTRY and label != CONTENT_TYPE:
            # An entry's actor: a user is read where users are, not beside the entry
            # (Django would otherwise look where the entry came from). Its content type
            # is the audit database's own, so that one is read beside it.
            return again(model)
        return None

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        labels = {_label(obj1), _label(obj2)}
        if conf.get().DATABASE is None or not labels & AUDIT_TABLES:
            return None
        if CONTENT_TYPE in labels:
            # Content type keys differ between databases: only the audit database's own.
            return bool(obj1._state.db == obj2._state.db)
        return True  # the actor: a user kept by key, with no database constraint

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        database = conf.get().DATABASE
        if database is None or app_label != "auditq" or model_name is None:
            return None
        if f"auditq.{model_name}" in AUDIT_TABLES:
            return db == database
        return False if db == database else None
