"""Committed outbox rows -> recorded, from the workers; web processes publish nothing.

Every Celery worker process runs a relay thread (started by the ``worker_ready`` signal).
On PostgreSQL it ``LISTEN``s on ``auditq_outbox``, which the outbox function notifies at
each commit, so a new row is picked up at once; elsewhere it polls every
``RELAY_POLL_SECONDS``. Each round takes up to ``RELAY_BATCH_SIZE`` fresh rows straight
from the outbox and records them in one transaction (:func:`auditq.delivery.recording.consume_fresh`;
``SKIP LOCKED``, so the relays of several workers share the work): no broker message and
no task per row, so a steady stream of one-save transactions costs one database
transaction per round, and the lag is one round.

The broker carries what the relay publishes instead: rows claimed by ``auditq_relay`` or
the ``auditq.tasks.relay`` periodic task (for projects that keep the relay out of their
workers, ``RELAY_IN_WORKER = False``), and claimed rows still undelivered
``RELAY_AFTER_SECONDS`` later. Claims are committed before publishing, a failed publish
releases the rows at once, and delivering a row twice is harmless (see
:mod:`auditq.delivery.recording`). The relay thread also runs the sweeps (:func:`sweep`: callback
runs and operation steps coming due), and so do ``auditq_relay`` and the periodic task.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import current_app
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, router, transaction
from django.db.models import Q, QuerySet
from django.dispatch import receiver
from django.utils import timezone

from auditq import conf, registry
from auditq.delivery import recording
from auditq.stream import events

logger = logging.getLogger("auditq")

CHANNEL = "auditq_outbox"
DELIVER = "auditq.tasks.deliver"
DUE_SECONDS = 0.2
"""The relay looks for due work (retries, steps, overdue counters) at most this often,
however short ``RELAY_POLL_SECONDS``: that work is timed in seconds."""


class BrokerUnavailable(Exception):
    """The broker could not be reached or did not answer within ``PUBLISH_TIMEOUT``."""


class NoCeleryApp(Exception):
    """Only Celery's unconfigured default app is loaded: publishing would go nowhere."""


def celery_app(app: Any = None) -> Any:
    """Return ``app`` or the current Celery app, refusing Celery's unconfigured default.

    Raises:
        NoCeleryApp: the project's Celery app was never imported in this process.
    """
    app = app or current_app._get_current_object()
    # Celery's fallback, made when no app was ever created: Celery("default", fixups=[]).
    if app.main == "default" and not app.fixups:
        raise NoCeleryApp(
            "the project's Celery app is not loaded, so Celery's default app (broker "
            "amqp://localhost) is current. Import it in your project package: "
            "`from .celery import app as celery_app` in proj/__init__.py."
        )
    return app


_configured_eager: dict[Any, bool] = {}


def eager(app: Any) -> bool:
    """Whether ``app`` runs tasks in the calling process (``task_always_eager``).

    Asked at every commit that wrote an outbox row, so not through Celery's settings
    lookup, which tries four spellings in three maps and raises a dozen exceptions when
    the setting is left at its default (about 20 µs of a lone save, profiled). A value
    set at run time (``app.conf.task_always_eager = ...``, ``conf.update()``) is in
    ``conf.changes`` and read there; the configured one is read once, and again after
    Django's settings change (``override_settings``).
    """
    changes = app.conf.changes
    if "task_always_eager" in changes:
        return bool(changes["task_always_eager"])
    found = _configured_eager.get(app)
    if found is None:
        found = _configured_eager[app] = bool(app.conf.task_always_eager)
    return found


@receiver(setting_changed)
def _forget_configured_eager(**kwargs: Any) -> None:
    _configured_eager.clear()


def committed(using: str) -> None:
    """Called after a transaction wrote outbox rows: deliver at once when tasks run eagerly.

    In production this does nothing (the relay in the workers wakes by itself); with
    ``task_always_eager`` (tests, scripts) the rows are recorded in this process.
    """
    if eager(current_app._get_current_object()):
        recording.consume_waiting(using)


def broker_connection(app: Any) -> Any:
    """A new broker connection for publishing, with ``PUBLISH_TIMEOUT`` on every socket."""
    timeout = conf.get().PUBLISH_TIMEOUT
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    return app.connection_for_write(connect_timeout=timeout, transport_options=options)


def publish(
    outbox_ids: list[int],
    using: str = DEFAULT_DB_ALIAS,
    app: Any = None,
    connection: Any = None,
) -> None:
    """Send one message asking a worker to deliver ``outbox_ids``.

    Args:
        outbox_ids: keys of committed outbox rows.
        using: the database alias the rows live in.
        app: the Celery app to publish with; default the current app.
        connection: a broker connection to reuse; default a new one, closed after.

    Raises:
        BrokerUnavailable: the broker refused, failed or timed out.
    """
    send(
        DELIVER,
        (outbox_ids, using),
        app=celery_app(app),
        connection=connection,
        queue=conf.get().QUEUE,
    )


def send(
    task: str,
    args: tuple,
    *,
    app: Any,
    connection: Any = None,
    queue: str | None,
    countdown: float | None = None,
) -> None:
    """Publish one auditq task message, always as JSON whatever ``task_serializer`` says.

    Raises:
        BrokerUnavailable: the broker refused, failed or timed out.
    """
    try:
        if connection is None:
            with broker_connection(app) as fresh:
                app.send_task(
                    task,
                    args,
                    connection=fresh,
                    queue=queue,
                    countdown=countdown,
                    serializer="json",
                    retry=False,
                )
        else:
            app.send_task(
                task,
                args,
                connection=connection,
                queue=queue,
                countdown=countdown,
                serializer="json",
                retry=False,
            )
    except ImportError:
        raise  # a broken install (say, the transport's dependencies), not an outage
    except Exception as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc


def publish_rows(
    due: QuerySet,
    *,
    task: str,
    label: str,
    queue_of: Callable[[str], str | None],
    run_here: Callable[[int, str], Any],
    using: str,
    app: Any = None,
    connection: Any = None,
) -> int:
    """Claim up to ``RELAY_BATCH_SIZE`` rows of ``due`` and send ``task(pk, using)`` for each.

    For the ledgers whose rows become tasks (callback runs, operation steps): a row is
    claimed (its ``published_at`` stamped, committed) before it is sent, released if the
    send fails, and published again if still due ``RELAY_AFTER_SECONDS`` after its claim.
    With ``task_always_eager`` each row runs here instead (``run_here(pk, using)``).

    Args:
        due: the rows whose work is due, with ``next_attempt_at`` and ``published_at``
            columns (those claimed less than ``RELAY_AFTER_SECONDS`` ago are left out).
        task: the task's name.
        label: the column handed to ``queue_of`` to pick each row's queue.
        queue_of: a label -> the row's Celery queue.
        run_here: what runs one row in eager mode.
        using: the database alias of the rows.
        app: the Celery app; default the current app.
        connection: a broker connection to reuse.

    Returns:
        How many rows were published (or run here).

    Raises:
        BrokerUnavailable: the broker failed; the rows not sent are due again at once.
    """
    stale = timezone.now() - datetime.timedelta(seconds=conf.get().RELAY_AFTER_SECONDS)
    due = due.filter(Q(published_at__isnull=True) | Q(published_at__lte=stale))
    if not due.exists():
        return 0  # no write transaction (on SQLite, no write lock) just to find nothing
    rows = due.model._default_manager.using(using)
    with transaction.atomic(using=using):
        claimed = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_attempt_at", "id")
            .values_list("id", label)[: conf.get().RELAY_BATCH_SIZE]
        )
        rows.filter(id__in=[pk for pk, _ in claimed]).update(published_at=timezone.now())
    app = celery_app(app)
    if eager(app):  # tests and scripts: run them here and now
        for pk, _ in claimed:
            run_here(pk, using)
        return len(claimed)
    sent = 0
    try:
        for pk, name in claimed:
            send(task, (pk, using), app=app, connection=connection, queue=queue_of(name))
            sent += 1
    except BaseException:
        rows.filter(id__in=[pk for pk, _ in claimed[sent:]]).update(published_at=None)
        raise
    return sent


def sweep(using: str = DEFAULT_DB_ALIAS, app: Any = None, connection: Any = None) -> int:
    """Run every registered sweeper (retries and operation steps coming due); return how
    many rows they published."""
    app = celery_app(app)
    return sum(sweeper(using, app, connection) for sweeper in registry.sweepers())


def _claim(using: str, limit: int, *, fresh: bool, cutoff: datetime.datetime) -> list[int]:
    """Mark up to ``limit`` rows as published now and return their keys (committed).

    ``fresh``: rows never published; otherwise rows older than ``cutoff`` whose last
    publish is older than ``cutoff`` too. Rows another relay is claiming are skipped.
    """
    from auditq.models import Outbox

    rows = Outbox.objects.using(using)
    if fresh:
        due = rows.filter(relayed_at__isnull=True)
    else:
        due = rows.filter(created_at__lte=cutoff).filter(
            Q(relayed_at__isnull=True) | Q(relayed_at__lte=cutoff)
        )
    connection = connections[using]
    if connection.vendor == "postgresql":
        # One statement picks, locks and stamps.
        table = connection.ops.quote_name(Outbox._meta.db_table)
        where, params = (
            ("relayed_at IS NULL", [])
            if fresh
            else ("created_at <= %s AND (relayed_at IS NULL OR relayed_at <= %s)", [cutoff] * 2)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET relayed_at = %s WHERE id IN (SELECT id FROM {table} "
                f"WHERE {where} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
                [timezone.now(), *params, limit],
            )
            return sorted(row[0] for row in cursor.fetchall())
    if not due.exists():
        return []  # no write transaction (on SQLite, no write lock) just to find nothing
    with transaction.atomic(using=using):
        ids = list(
            due.select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            rows.filter(id__in=ids).update(relayed_at=timezone.now())
    return ids


def _release(using: str, outbox_ids: list[int]) -> None:
    """A publish failed: make the rows due again at once, not after a relay period."""
    from auditq.models import Outbox

    Outbox.objects.using(using).filter(id__in=outbox_ids).update(relayed_at=None)


def _publish_claimed(using: str, ids: list[int], app: Any, connection: Any = None) -> None:
    try:
        publish(ids, using, app, connection)
    except BaseException:
        _release(using, ids)  # whatever went wrong, the rows are due again at once
        raise


def relay(
    older_than: float | None = None,
    using: str = DEFAULT_DB_ALIAS,
    *,
    fresh: bool = False,
    app: Any = None,
    connection: Any = None,
) -> int:
    """Publish the rows that are due; return how many were published.

    Args:
        older_than: publish rows left undelivered this many seconds (default
            ``RELAY_AFTER_SECONDS``; 0 publishes every row not being published now).
        using: the database alias of the outbox.
        fresh: publish only the rows never published yet, whatever their age.
        app: the Celery app; default the current app.
        connection: a broker connection to reuse.

    Raises:
        BrokerUnavailable: the broker could not be reached; the rows stay due.
    """
    settings = conf.get()
    age = settings.RELAY_AFTER_SECONDS if older_than is None else older_than
    cutoff = timezone.now() - datetime.timedelta(seconds=age)
    app = celery_app(app)
    published = 0
    while ids := _claim(using, settings.RELAY_BATCH_SIZE, fresh=fresh, cutoff=cutoff):
        _publish_claimed(using, ids, app, connection)
        published += len(ids)
    return published


def backlog(using: str = DEFAULT_DB_ALIAS) -> tuple[int, datetime.datetime | None]:
    """Return how many outbox rows are undelivered and when the oldest was written."""
    from auditq.models import Outbox

    rows = Outbox.objects.using(using)
    oldest = rows.order_by("id").values_list("created_at", flat=True).first()
    return rows.count(), oldest


class Relay:
    """The relay thread of one worker process (see the module docstring)."""

    def __init__(self, app: Any, using: str = DEFAULT_DB_ALIAS, threads: int = 1) -> None:
        self.app = app
        self.using = using
        self.threads = threads
        self._stop = threading.Event()
        self._backlog = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads (once): the one that listens, publishes and sweeps, and
        ``threads - 1`` that help it record a backlog (their database waits overlap)."""
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run, name="auditq-relay", daemon=True),
                *(
                    threading.Thread(target=self._help, name="auditq-relay-helper", daemon=True)
                    for _ in range(self.threads - 1)
                ),
            ]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to finish their round and wait for them."""
        self._stop.set()
        self._backlog.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _record_fresh(self) -> None:
        """Record fresh rows until none is left, RELAY_BATCH_SIZE rows a transaction."""
        size = conf.get().RELAY_BATCH_SIZE
        while not self._stop.is_set():
            recorded = recording.consume_fresh(self.using, size)
            if not recorded:
                return
            if recorded >= size:
                self._backlog.set()  # a full round: more are waiting, wake the helpers

    def _help(self) -> None:
        poll = conf.get().RELAY_POLL_SECONDS
        while not self._stop.is_set():
            self._backlog.wait(poll * 5)
            self._backlog.clear()
            try:
                self._record_fresh()
            except events.PayloadError as exc:
                logger.error("auditq relay: outbox rows left for later: %s", exc)
            except Exception:
                logger.exception("auditq relay: a round failed; retrying.")
                close_old_connections()
                self._stop.wait(1.0)
        connections[self.using].close()

    def _run(self) -> None:
        settings = conf.get()
        wakeups = Wakeups(self.using, self._stop)
        last_sweep = last_due = 0.0
        broker = None
        while not self._stop.is_set():
            try:
                if broker is None:
                    broker = broker_connection(self.app)
                self._record_fresh()
                now = time.monotonic()
                if now - last_due >= max(settings.RELAY_POLL_SECONDS, DUE_SECONDS):
                    # Due work is timed in seconds: a look at each poll is enough, not one
                    # at each commit's wake-up (nor 20 a second when the relay polls fast).
                    last_due = now
                    sweep(self.using, self.app, broker)
                if now - last_sweep >= settings.RELAY_AFTER_SECONDS / 2:
                    last_sweep = now
                    relay(using=self.using, app=self.app, connection=broker)
            except events.PayloadError as exc:
                logger.error("auditq relay: outbox rows left for later: %s", exc)
            except BrokerUnavailable as exc:
                logger.warning("auditq relay: the broker is unavailable (%s); retrying.", exc)
                _discard(broker)
                broker = None
                self._stop.wait(1.0)
            except Exception:
                logger.exception("auditq relay: a round failed; retrying.")
                close_old_connections()
                self._stop.wait(1.0)
            wakeups.wait(settings.RELAY_POLL_SECONDS)
        wakeups.close()
        _discard(broker)
        connections[self.using].close()


class Wakeups:
    """What the relay waits on between rounds: a commit's ``NOTIFY`` on PostgreSQL (on
    a connection of its own, re-opened after a failure), else (or with
    ``AUDITQ["NOTIFY"]`` off) just the poll interval."""

    def __init__(self, using: str, stop: threading.Event) -> None:
        self.using = using
        self.stop = stop
        self.listener: Any = None
        self.listens = connections[using].vendor == "postgresql" and conf.get().NOTIFY

    def wait(self, timeout: float) -> None:
        """Return when a commit notified, after ``timeout`` seconds, or at ``stop``."""
        if not self.listens:
            self.stop.wait(timeout)
            return
        import psycopg

        try:
            if self.listener is None:
                params = connections[self.using].get_connection_params()
                params.pop("cursor_factory", None)
                params.pop("context", None)
                self.listener = psycopg.connect(**params, autocommit=True)
                self.listener.execute(f"LISTEN {CHANNEL}")
            # One commit, then drop those queued meanwhile: the next round claims every
            # row they announced.
            for _ in self.listener.notifies(timeout=timeout, stop_after=1):
                pass
            for _ in self.listener.notifies(timeout=0):
                pass
        except psycopg.Error as exc:
            logger.warning("auditq relay: LISTEN failed (%s); polling until it works.", exc)
            self.close()
            self.stop.wait(timeout)

    def close(self) -> None:
        """Close the listening connection, if any."""
        if self.listener is not None:
            try:
                self.listener.close()
            finally:
                self.listener = None


def _discard(broker: Any) -> None:
    if broker is not None:
        try:
            broker.release()
        except Exception:
            logger.debug("auditq relay: error while closing a broker connection", exc_info=True)


_relays: list[Relay] = []


def outbox_databases() -> list[str]:
    """The database aliases that hold an outbox (where auditq's tables are migrated)."""
    from auditq.models import Outbox

    return [alias for alias in connections if router.allow_migrate_model(alias, Outbox)]


def start_in_worker(app: Any) -> None:
    """Start this process's relay threads, one per outbox database (``worker_ready``)."""
    if not _relays and conf.get().RELAY_IN_WORKER:
        threads = conf.get().RELAY_THREADS
        _relays.extend(Relay(app, alias, threads) for alias in outbox_databases())
        for thread in _relays:
            thread.start()


def stop_in_worker() -> None:
    """Stop this process's relay threads (``worker_shutdown``)."""
    while _relays:
        _relays.pop().stop()
