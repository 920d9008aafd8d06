"""From captured events to a committed outbox row, one broker message, and audit entries.

The request path: every event is registered as an ``on_commit`` marker, so Django's own
savepoint bookkeeping drops the events of a rolled-back savepoint. Just before the
outermost transaction commits, a hook on the connection writes the surviving events as
one outbox row inside that transaction, and after the commit the row's key is handed to
this process's publisher thread, which sends one message for it (or for several rows
waiting together). A broker that is down or slow never holds the request; the row waits
for the relay.

The worker side: :func:`consume` writes a row's entries and deletes the row in one
transaction; entries are unique by ``event_id``, so a redelivered message changes nothing.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import queue
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

from celery import current_app
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from auditq import conf
from auditq.context import AuditContext

logger = logging.getLogger("auditq")

PAYLOAD_VERSION = 1


class BrokerUnavailable(Exception):
    """The broker could not be reached or did not answer within ``PUBLISH_TIMEOUT``."""


class Pending:
    """An event waiting in ``connection.run_on_commit`` for its transaction to commit."""

    __slots__ = ("context", "event")

    def __init__(self, event: dict[str, Any], context: AuditContext) -> None:
        self.event = event
        self.context = context

    def __call__(self) -> None:
        """Do nothing: the commit hook has already written the event to the outbox."""


def enqueue(using: str, event: dict[str, Any], context: AuditContext) -> None:
    """Hold ``event`` until the transaction on ``using`` commits; drop it on rollback."""
    connection = connections[using]
    if "commit" not in connection.__dict__:
        _install_commit_hook(connection)
    pending = Pending(event, context)
    if connection.in_atomic_block:
        connection.on_commit(pending)
    else:
        # Only reached when a change is made outside any transaction (Django always wraps
        # deletes and many-to-many changes, auditq wraps saves): the change has committed
        # already, so write its row at once.
        publisher.submit(_store(connection, [pending]), using)


def _install_commit_hook(connection: Any) -> None:
    commit = connection.commit

    def commit_with_outbox() -> None:
        if not connection.in_atomic_block and connection.run_on_commit:
            pendings = [f for _, f, _ in connection.run_on_commit if type(f) is Pending]
            if pendings:
                try:
                    outbox_id = _store(connection, pendings)
                except DatabaseError:
                    raise
                except Exception as exc:
                    # Django rolls a failed commit back only on DatabaseError: anything
                    # else would leave the transaction open. Rolled back, not lost: the
                    # caller sees the error.
                    raise DatabaseError(f"auditq could not write its outbox row: {exc!r}") from exc
                connection.run_on_commit.append(
                    (set(), partial(publisher.submit, outbox_id, connection.alias), False)
                )
        commit()

    connection.commit = commit_with_outbox


def _store(connection: Any, pendings: Sequence[Pending]) -> int:
    from auditq.models import Outbox

    contexts: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    events = []
    for pending in pendings:
        key = id(pending.context)
        if key not in index:
            index[key] = len(contexts)
            contexts.append(pending.context.payload)
        events.append({**pending.event, "ctx": index[key]})
    payload = {"v": PAYLOAD_VERSION, "contexts": contexts, "events": events}
    # Text, not jsonb: nothing queries inside it, and parsing it on insert costs the request.
    return Outbox.objects.using(connection.alias).create(payload=json.dumps(payload)).pk


class Publisher:
    """Publishes committed outbox rows from a background thread of this process.

    Celery's publish costs hundreds of microseconds of Python, more than the save it
    follows; the request only hands the row's key over. The guarantee is unchanged: a
    process that dies before its thread published leaves the row to the relay, exactly
    like one that dies between commit and publish. Rows waiting together are published
    as one message. With ``task_always_eager`` (tests) it publishes at once instead.
    """

    BATCH = 100

    def __init__(self) -> None:
        self._reset()
        # A forked child inherits neither the thread nor, safely, the lock.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pid = 0
        self._queue: queue.SimpleQueue[tuple[int, str, Any]] = queue.SimpleQueue()
        self._unfinished = 0

    def submit(self, outbox_id: int, using: str) -> None:
        """Publish the row soon, from the background thread, with this thread's Celery app."""
        app = current_app._get_current_object()
        if app.conf.task_always_eager:
            self._publish([outbox_id], using, app)
            return
        with self._lock:
            if self._pid != os.getpid():
                # First use in this process (or in a forked child): start its thread.
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="auditq-publisher", daemon=True).start()
            self._unfinished += 1
            self._queue.put((outbox_id, using, app))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted row has been published (or given up on).

        Returns False if ``timeout`` seconds passed first. Called at interpreter exit, so
        a script's last changes are published before it ends.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def _run(self) -> None:
        source = self._queue
        while True:
            batch = [source.get()]
            while len(batch) < self.BATCH:
                try:
                    batch.append(source.get_nowait())
                except queue.Empty:
                    break
            for using, app in dict.fromkeys((alias, app) for _, alias, app in batch):
                ids = [pk for pk, alias, by in batch if (alias, by) == (using, app)]
                self._publish(ids, using, app)
            with self._idle:
                self._unfinished -= len(batch)
                self._idle.notify_all()

    @staticmethod
    def _publish(outbox_ids: list[int], using: str, app: Any) -> None:
        try:
            publish(outbox_ids, using, app)
        except BrokerUnavailable as exc:
            logger.warning(
                "auditq: outbox rows %s not published (%s); the relay will deliver them.",
                outbox_ids,
                exc,
            )
        except Exception:
            logger.exception("auditq: publishing outbox rows %s failed", outbox_ids)


publisher = Publisher()


@atexit.register
def _flush_at_exit() -> None:
    if not publisher.flush(timeout=5):
        logger.warning("auditq: exiting with unpublished outbox rows; the relay will deliver them.")


def flush(timeout: float | None = None) -> bool:
    """Wait until this process has published every committed change (see ``Publisher``)."""
    return publisher.flush(timeout)


_local = threading.local()
_generation = 0


def _producer(app: Any) -> Any:
    """This thread's producer for ``app``, on its own connection with ``PUBLISH_TIMEOUT``."""
    producer = getattr(_local, "producer", None)
    if producer is not None and (_local.generation, _local.app) != (_generation, app):
        _discard_producer()
        producer = None
    if producer is None:
        timeout = conf.get().PUBLISH_TIMEOUT
        options = {
            **(app.conf.broker_transport_options or {}),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        connection = app.connection_for_write(connect_timeout=timeout, transport_options=options)
        producer = _local.producer = app.amqp.Producer(connection)
        _local.generation, _local.app = _generation, app
    return producer


def _discard_producer() -> None:
    producer = getattr(_local, "producer", None)
    _local.producer = None
    if producer is not None:
        try:
            producer.connection.release()
        except Exception:
            logger.debug("auditq: error while closing a broken broker connection", exc_info=True)


def reset_producers() -> None:
    """Make every thread open a new broker connection on its next publish.

    For when the broker settings change at run time (tests do).
    """
    global _generation
    _generation += 1


def publish(outbox_ids: list[int], using: str = DEFAULT_DB_ALIAS, app: Any = None) -> None:
    """Send one message asking a worker to deliver ``outbox_ids``.

    Args:
        outbox_ids: keys of committed outbox rows.
        using: the database alias the rows live in.
        app: the Celery app to publish with; default the current app. Celery's current
            app is per thread, so a background thread must be given the caller's.

    Raises:
        BrokerUnavailable: the broker refused, failed or timed out.
    """
    from auditq import tasks  # registers the shared task with every app

    app = app or current_app._get_current_object()
    try:
        app.tasks[tasks.deliver.name].apply_async(
            (outbox_ids, using), producer=_producer(app), queue=conf.get().QUEUE, retry=False
        )
    except Exception as exc:
        _discard_producer()
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc


def relay(older_than: float | None = None, using: str = DEFAULT_DB_ALIAS) -> int:
    """Publish again every outbox row left undelivered for ``older_than`` seconds.

    A row is published at most once per ``older_than`` seconds; publishing one twice is
    harmless. Returns how many rows were published.

    Raises:
        BrokerUnavailable: the broker could not be reached (nothing is lost: retry later).
    """
    from auditq.models import Outbox

    settings = conf.get()
    age = settings.RELAY_AFTER_SECONDS if older_than is None else older_than
    published = last_id = 0
    now = timezone.now()
    cutoff = now - datetime.timedelta(seconds=age)
    while True:
        # Claim a page (SKIP LOCKED: concurrent relays share the work), commit, and only
        # then publish: a worker must never receive a row that is still locked.
        with transaction.atomic(using=using):
            ids = list(
                Outbox.objects.using(using)
                .select_for_update(skip_locked=True)
                .filter(id__gt=last_id, created_at__lte=cutoff)
                .filter(Q(relayed_at__isnull=True) | Q(relayed_at__lte=cutoff))
                .order_by("id")
                .values_list("id", flat=True)[: settings.RELAY_BATCH_SIZE]
            )
            Outbox.objects.using(using).filter(id__in=ids).update(relayed_at=now)
        if not ids:
            return published
        # A page that fails to publish is tried again by the next run after ``age``.
        for start in range(0, len(ids), 100):
            publish(ids[start : start + 100], using)
        published += len(ids)
        last_id = ids[-1]


def backlog(using: str = DEFAULT_DB_ALIAS) -> tuple[int, datetime.datetime | None]:
    """Return how many outbox rows are undelivered and when the oldest was written."""
    from auditq.models import Outbox

    rows = Outbox.objects.using(using)
    oldest = rows.order_by("id").values_list("created_at", flat=True).first()
    return rows.count(), oldest


def consume(outbox_id: int, using: str = DEFAULT_DB_ALIAS) -> int:
    """Write the entries of one outbox row and delete the row, in one transaction.

    Returns how many entries were in the row (0 when another delivery got there first).
    """
    from auditq.models import AuditEntry, Outbox

    with transaction.atomic(using=using):
        # Wait for a row another transaction holds: a worker delivering the same row
        # deletes it (we then find nothing), one that crashes leaves it to us.
        row = (
            Outbox.objects.using(using)
            .select_for_update()
            .filter(pk=outbox_id)
            .values_list("payload", flat=True)
            .first()
        )
        if row is None:
            return 0
        entries = list(_entries(json.loads(row), using))
        AuditEntry.objects.using(using).bulk_create(entries, ignore_conflicts=True, batch_size=500)
        Outbox.objects.using(using).filter(pk=outbox_id).delete()
    return len(entries)


def _content_type(label: str, using: str) -> ContentType:
    app_label, model = label.split(".", 1)
    manager = ContentType.objects.db_manager(using)
    try:
        return manager.get_by_natural_key(app_label, model)
    except ContentType.DoesNotExist:
        return manager.get_or_create(app_label=app_label, model=model)[0]


def _missing_repr(content_type: ContentType, pk: Any, using: str) -> str:
    model = content_type.model_class()
    instance = model and model._base_manager.using(using).filter(pk=pk).first()
    try:
        return str(instance)[:200] if instance is not None else str(pk)
    except Exception:
        return str(pk)


def _entries(payload: dict[str, Any], using: str):
    from auditq.models import AuditEntry

    recorded_at = timezone.now()
    contexts = payload["contexts"]
    for event in payload["events"]:
        ctx = contexts[event["ctx"]]
        content_type = _content_type(event["model"], using)
        object_repr = event["repr"]
        if object_repr is None:
            object_repr = _missing_repr(content_type, event["pk"], using)
        yield AuditEntry(
            event_id=event["id"],
            content_type=content_type,
            object_pk=str(event["pk"]),
            object_repr=object_repr,
            action=event["action"],
            changes=event["changes"],
            actor_id=ctx["actor_id"],
            actor_repr=ctx["actor_repr"],
            remote_addr=ctx["remote_addr"],
            request_id=ctx["request_id"] or "",
            context=ctx["extra"],
            occurred_at=datetime.datetime.fromtimestamp(event["at"], tz=datetime.UTC),
            recorded_at=recorded_at,
        )
