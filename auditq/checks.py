"""System checks: configuration mistakes reported at start-up, each with an id and a hint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connections, models, router

from auditq import conf, registry
from auditq.capture import bulk
from auditq.consumers import counters
from auditq.delivery import broker
from auditq.models import AuditChain, AuditChainLane, AuditEntry, OperationRun
from auditq.operations import executor
from auditq.routers import AuditRouter

MIDDLEWARE = "auditq.middleware.AuditContextMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check_audited_fields(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E001: ``@audited`` names a field the model does not have."""
    return [
        checks.Error(message, hint=hint, obj=model, id="auditq.E001")
        for model, message, hint in registry.problems()
    ]


def check_counters(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E006 to E009: a ``@counter_cache`` names what cannot hold or feed a counter."""
    found: list[checks.CheckMessage] = []
    for counter in registry.counters():
        model = counter.model
        label = (
            f"@counter_cache({counter.fk_name!r}, field={counter.field!r}) on {model._meta.label}"
        )
        fk = counters.foreign_key(counter)
        if fk is None:
            found.append(
                checks.Error(
                    f"{label}: {counter.fk_name!r} is not a foreign key of {model.__name__}.",
                    hint="Name the ForeignKey (or OneToOneField) that points at the parent: "
                    + ", ".join(f.name for f in model._meta.concrete_fields if f.many_to_one),
                    obj=model,
                    id="auditq.E006",
                )
            )
        else:
            parent = fk.related_model
            column = _field(parent, counter.field)
            if not isinstance(column, counters.NUMERIC):
                what = "has no such field" if column is None else "is not numeric"
                found.append(
                    checks.Error(
                        f"{label}: {parent._meta.label} {what} ({counter.field!r}).",
                        hint=f"Add a numeric column to {parent.__name__}, e.g. "
                        f"{counter.field} = models.PositiveIntegerField(default=0) "
                        "(a DecimalField for sums of decimals).",
                        obj=model,
                        id="auditq.E007",
                    )
                )
        if counter.sum is not None and not isinstance(_field(model, counter.sum), counters.NUMERIC):
            found.append(
                checks.Error(
                    f"{label}: sum={counter.sum!r} is not a numeric field of {model.__name__}.",
                    hint="Sum an integer, decimal or float field of the child, or leave sum "
                    "out to count children.",
                    obj=model,
                    id="auditq.E008",
                )
            )
        if counter.when is not None and not callable(counter.when):
            found.append(
                checks.Error(
                    f"{label}: when={counter.when!r} is not callable.",
                    hint="Pass a function of the child, e.g. when=lambda d: d.status == 'paid'.",
                    obj=model,
                    id="auditq.E009",
                )
            )
    return found


def _field(model: Any, name: str) -> Any:
    try:
        field = model._meta.get_field(name)
    except Exception:
        return None
    return field if field.concrete else None


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E002: ``AUDITQ`` has an unknown key, a wrong type or a bad value."""
    return [checks.Error(message, hint=hint, id="auditq.E002") for message, hint in conf.problems()]


AUDIT_ROUTER = "auditq.routers.AuditRouter"


def check_audit_database(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E011 to E013: ``AUDITQ["DATABASE"]`` without its router, the entries routed
    elsewhere, or auditq's other tables routed away from the audited models' writes."""
    database = None if conf.problems() else conf.get().DATABASE
    if database is None:
        return []
    if not any(isinstance(found, AuditRouter) for found in router.routers):
        return [
            checks.Error(
                f"AUDITQ['DATABASE'] is {database!r}, but {AUDIT_ROUTER} is not in "
                "DATABASE_ROUTERS: the entries would not go there.",
                hint=f"Add {AUDIT_ROUTER!r} to DATABASE_ROUTERS (after your own routers), "
                f"then run manage.py migrate --database={database}.",
                id="auditq.E011",
            )
        ]
    found: list[checks.CheckMessage] = []
    audit_models: tuple[type[models.Model], ...] = (AuditEntry, AuditChain, AuditChainLane)
    for model in audit_models:
        routed = {router.db_for_read(model), router.db_for_write(model)}
        if routed != {database} or not router.allow_migrate_model(database, model):
            found.append(
                checks.Error(
                    f"AUDITQ['DATABASE'] is {database!r}, but a router before "
                    f"{AUDIT_ROUTER} sends {model._meta.label} to {sorted(routed)!r} or "
                    f"keeps its table out of {database!r}.",
                    hint=f"Have your routers return None for {model._meta.label}, or put "
                    f"{AUDIT_ROUTER!r} first in DATABASE_ROUTERS.",
                    id="auditq.E013",
                )
            )
    writers = {router.db_for_write(model) for model in registry.tracked_models()}
    writers = writers or {DEFAULT_DB_ALIAS}
    for model in apps.get_app_config("auditq").get_models():
        if model in audit_models:
            continue
        routed = {router.db_for_read(model), router.db_for_write(model)}
        away = sorted(routed - writers)
        missing = sorted(a for a in writers if not router.allow_migrate_model(a, model))
        if away or missing:
            where = f"sends it to {away!r}" if away else f"keeps its table out of {missing!r}"
            found.append(
                checks.Error(
                    f"The routers put {model._meta.label} away from the database the audited "
                    f"models are written to ({', '.join(sorted(writers))}): it {where}.",
                    hint="auditq's outbox, callback runs, counter deltas and operation runs "
                    "must commit with the writes they record: route them with the audited "
                    "models, and leave AUDITQ['DATABASE'] to a database of its own (it "
                    "holds only the entries and their chains).",
                    obj=model,
                    id="auditq.E012",
                )
            )
    return found


def check_partition(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E014: ``AUDITQ["PARTITION"]`` set, but the entries are not on PostgreSQL."""
    period = None if conf.problems() else conf.get().PARTITION
    if period is None:
        return []
    alias = router.db_for_write(AuditEntry)
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        return []
    return [
        checks.Error(
            f"AUDITQ['PARTITION'] is {period!r}, but the audit entries' database {alias!r} "
            f"is {vendor}: only PostgreSQL partitions them.",
            hint="Remove AUDITQ['PARTITION'], or keep the entries on PostgreSQL "
            "(AUDITQ['DATABASE']).",
            id="auditq.E014",
        )
    ]


def check_celery(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E003: Celery may send or accept something else than JSON."""
    from celery import current_app

    serializer = current_app.conf.task_serializer
    accepted = set(current_app.conf.accept_content or ())
    if serializer == "json" and accepted <= {"json", "application/json"}:
        return []
    return [
        checks.Error(
            f"Celery must use JSON only (task_serializer={serializer!r}, "
            f"accept_content={sorted(accepted)!r}).",
            hint='Set CELERY_TASK_SERIALIZER = "json" and CELERY_ACCEPT_CONTENT = ["json"]: '
            "auditq's messages carry keys and values, and accepting pickle lets whoever can "
            "write to the broker run code in your workers.",
            id="auditq.E003",
        )
    ]


def check_celery_app(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.E005: only Celery's unconfigured default app is loaded."""
    try:
        broker.celery_app()
    except broker.NoCeleryApp as exc:
        return [
            checks.Error(
                f"auditq cannot reach your workers: {exc}",
                hint="See Celery's 'First steps with Django': proj/celery.py defines the app "
                "and proj/__init__.py imports it.",
                id="auditq.E005",
            )
        ]
    return []


def check_middleware(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W001 / auditq.E004: the context middleware is missing or placed too early."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if MIDDLEWARE not in middleware:
        return [
            checks.Warning(
                f"{MIDDLEWARE} is not in MIDDLEWARE: changes made in requests will be "
                "recorded without actor, address or request id.",
                hint=f"Add {MIDDLEWARE!r} after {AUTH_MIDDLEWARE!r}.",
                id="auditq.W001",
            )
        ]
    if AUTH_MIDDLEWARE in middleware and middleware.index(MIDDLEWARE) < middleware.index(
        AUTH_MIDDLEWARE
    ):
        return [
            checks.Error(
                f"{MIDDLEWARE} comes before {AUTH_MIDDLEWARE}, so it cannot see request.user.",
                hint=f"Move {MIDDLEWARE!r} after {AUTH_MIDDLEWARE!r}.",
                id="auditq.E004",
            )
        ]
    return []


def check_results_app(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W002: django-celery-results is not installed (the dashboard links to it)."""
    if "django_celery_results" in settings.INSTALLED_APPS:
        return []
    return [
        checks.Warning(
            "django_celery_results is not in INSTALLED_APPS.",
            hint='Add "django_celery_results" to INSTALLED_APPS to keep task results.',
            id="auditq.W002",
        )
    ]


def check_sqlite_locking(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W003: a SQLite database that workers write to needs IMMEDIATE transactions."""
    return [
        checks.Warning(
            f"SQLite database {alias!r} uses deferred transactions: a worker or the relay "
            "that reads and then writes while a request writes fails with "
            "'database is locked'.",
            hint=f"In DATABASES[{alias!r}], set "
            '"OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20} '
            "(IMMEDIATE transactions, and a 20-second wait for the lock).",
            id="auditq.W003",
        )
        for alias, database in dict[str, Any](settings.DATABASES).items()
        if database.get("ENGINE") == "django.db.backends.sqlite3"
        and (database.get("OPTIONS") or {}).get("transaction_mode") != "IMMEDIATE"
    ]


def check_operation_steps(
    databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """auditq.E010: unfinished operation runs wait for a step that no longer resolves.

    A database check (``migrate`` runs it, and ``check --database default``).
    """
    from django.db import DatabaseError

    found: list[checks.CheckMessage] = []
    for alias in databases or ():
        if not router.allow_migrate_model(alias, OperationRun):
            continue  # AUDITQ["DATABASE"]: it holds only the entries
        try:
            waiting = executor.unresolved(alias)
        except DatabaseError:  # auditq's tables are not there yet (before migrate)
            continue
        for name, branch, step, runs, why in waiting:
            found.append(
                checks.Error(
                    f"{runs} unfinished run{'s' if runs != 1 else ''} of operation {name!r} "
                    f"wait{'' if runs != 1 else 's'} for step {step} in branch {branch!r}, "
                    f"which no longer resolves: {why}",
                    hint="Keep a step under its old name (in its branch) until those runs "
                    "finish, or cancel them (OperationRun.cancel(), or the admin's "
                    "operation runs).",
                    id="auditq.E010",
                )
            )
    return found


RELAY_TASK = "auditq.tasks.relay"
PROXY_SETTINGS = ("SECURE_PROXY_SSL_HEADER", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT")


def check_deploy_relay(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W101 (``check --deploy``): relaying is off in the workers and no beat
    schedule runs the relay task, so nothing would be delivered."""
    if conf.problems() or conf.get().RELAY_IN_WORKER:
        return []
    if apps.is_installed("django_celery_beat"):
        return []  # its schedules live in the database: this check cannot see them
    try:
        schedule = broker.celery_app().conf.beat_schedule or {}
    except broker.NoCeleryApp:
        return []  # auditq.E005 says so
    if any(entry.get("task") == RELAY_TASK for entry in schedule.values()):
        return []
    return [
        checks.Warning(
            f"AUDITQ['RELAY_IN_WORKER'] is False and no beat schedule runs {RELAY_TASK}: "
            "committed changes stay in the outbox, and nothing is recorded.",
            hint=f'Add {{"auditq-relay": {{"task": "{RELAY_TASK}", "schedule": 5.0}}}} to '
            "CELERY_BEAT_SCHEDULE and run beat (with RELAY_AFTER_SECONDS as low), or turn "
            "RELAY_IN_WORKER back on. If cron runs manage.py auditq_relay, add "
            '"auditq.W101" to SILENCED_SYSTEM_CHECKS.',
            id="auditq.W101",
        )
    ]


def check_deploy_proxies(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W102 (``check --deploy``): Django is told a proxy is in front, but auditq
    trusts none, so every entry made in a request would record the proxy's address."""
    if conf.problems() or conf.get().TRUSTED_PROXIES:
        return []
    if MIDDLEWARE not in (getattr(settings, "MIDDLEWARE", None) or ()):
        return []
    behind = [name for name in PROXY_SETTINGS if getattr(settings, name, None)]
    if not behind:
        return []
    return [
        checks.Warning(
            f"{', '.join(behind)} say{'s' if len(behind) == 1 else ''} a proxy is in front, "
            "but AUDITQ['TRUSTED_PROXIES'] is empty: entries made in requests record the "
            "proxy's address as remote_addr, not the client's.",
            hint="Set AUDITQ['TRUSTED_PROXIES'] to your proxies' addresses or networks "
            '(e.g. ["10.0.0.0/8"]) so that their X-Forwarded-For is believed. If your '
            "server already puts the client's address in REMOTE_ADDR, add "
            '"auditq.W102" to SILENCED_SYSTEM_CHECKS.',
            id="auditq.W102",
        )
    ]


def check_deploy_eager(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W103 (``check --deploy``): Celery runs tasks eagerly, so the web process
    does the workers' job at each commit."""
    try:
        app = broker.celery_app()
    except broker.NoCeleryApp:
        return []
    if not broker.eager(app):
        return []
    return [
        checks.Warning(
            "Celery runs tasks eagerly (task_always_eager): auditq records every change "
            "and runs every handler and operation step in the web process, at its commit, "
            "instead of in a worker.",
            hint="Leave CELERY_TASK_ALWAYS_EAGER off in production; it is for tests and scripts.",
            id="auditq.W103",
        )
    ]


def check_bulk_querysets(**kwargs: Any) -> list[checks.CheckMessage]:
    """auditq.W004: a tracked model's default queryset overrides a bulk method, which then
    captures nothing unless it calls ``super()``."""
    found: list[checks.CheckMessage] = []
    for model in registry.tracked_models():
        tracking = registry.tracking(model)
        if tracking is None or not tracking.bulk or model._meta.proxy:
            continue
        manager: Any = model._default_manager
        queryset = getattr(manager, "_queryset_class", None)
        for name in ("update", "bulk_create", "bulk_update"):
            method = getattr(queryset, name, None)
            if queryset is None or getattr(method, bulk.GUARDED, False):
                continue
            found.append(
                checks.Warning(
                    f"{model._meta.label}'s default manager uses {queryset.__qualname__}, "
                    f"whose {name}() is its own: auditq records its rows only if it calls "
                    "super().",
                    hint=f"Call super().{name}(...) in {queryset.__qualname__}.{name}(), or "
                    "decorate the model with @audited(bulk=False) to say you know.",
                    obj=model,
                    id="auditq.W004",
                )
            )
    return found


def register() -> None:
    """Register every auditq check (called from ``AppConfig.ready``)."""
    for check in (
        check_audited_fields,
        check_counters,
        check_settings,
        check_audit_database,
        check_partition,
        check_celery,
        check_celery_app,
        check_middleware,
        check_results_app,
        check_sqlite_locking,
        check_bulk_querysets,
    ):
        checks.register(check, "auditq")
    checks.register(check_operation_steps, "auditq", checks.Tags.database)
    for check in (check_deploy_relay, check_deploy_proxies, check_deploy_eager):
        checks.register(check, "auditq", checks.Tags.security, deploy=True)
