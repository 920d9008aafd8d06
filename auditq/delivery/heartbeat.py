"""Workers say they are alive: a ``WorkerHeartbeat`` row written every few seconds by a
thread of each worker process, read by the dashboard and the trail's banner.

A broadcast ping cannot know how many workers will answer, so it always waits for its
whole timeout (half a second on every dashboard load); a row is one indexed read. The
thread runs whether or not the worker relays (``RELAY_IN_WORKER``): a worker that only
runs tasks records changes too.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading

from django.db import connections, router
from django.utils import timezone

from auditq.models import WorkerHeartbeat

logger = logging.getLogger("auditq")

INTERVAL_SECONDS = 5.0
"""How often a worker writes its heartbeat."""
ALIVE_WITHIN = datetime.timedelta(seconds=20)
"""A worker whose last heartbeat is older than this (four missed beats) is gone."""
FORGET_AFTER = datetime.timedelta(days=1)
"""Rows of workers silent this long are deleted when a worker starts."""


def default_name() -> str:
    """A name for a worker that did not give its node name: ``<pid>@<host>``."""
    return f"{os.getpid()}@{socket.gethostname()}"


def beat(name: str, now: datetime.datetime | None = None) -> None:
    """Write ``name``'s heartbeat (one ``UPDATE``; an ``INSERT`` the first time)."""
    now = now or timezone.now()
    rows = WorkerHeartbeat.objects.using(router.db_for_write(WorkerHeartbeat))
    if not rows.filter(name=name).update(seen_at=now):
        rows.update_or_create(name=name, defaults={"seen_at": now})


def forget(name: str | None = None, older_than: datetime.timedelta | None = None) -> None:
    """Delete ``name``'s row (a worker stopping), or the rows silent for ``older_than``."""
    rows = WorkerHeartbeat.objects.using(router.db_for_write(WorkerHeartbeat))
    if name is not None:
        rows.filter(name=name).delete()
    if older_than is not None:
        rows.filter(seen_at__lt=timezone.now() - older_than).delete()


def alive(now: datetime.datetime | None = None) -> list[tuple[str, datetime.datetime]]:
    """``(name, last heartbeat)`` of the workers heard from within ``ALIVE_WITHIN``."""
    since = (now or timezone.now()) - ALIVE_WITHIN
    rows = WorkerHeartbeat.objects.using(router.db_for_read(WorkerHeartbeat))
    return list(rows.filter(seen_at__gte=since).order_by("name").values_list("name", "seen_at"))


class Heartbeat:
    """The heartbeat thread of one worker process: beats at once, then every
    ``INTERVAL_SECONDS``; deletes its row when stopped, so the worker is gone at once."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or default_name()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="auditq-heartbeat", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and delete this worker's row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        alias = router.db_for_write(WorkerHeartbeat)
        try:
            forget(older_than=FORGET_AFTER)
        except Exception as exc:  # the database is down or not migrated: beats will say
            logger.debug("auditq heartbeat: could not delete old rows: %s", exc)
        while True:
            try:
                beat(self.name)
            except Exception as exc:
                logger.warning("auditq heartbeat: could not write %r's row: %s", self.name, exc)
            finally:
                # One short connection per beat rather than one held for ever by each worker.
                connections[alias].close()
            if self._stop.wait(INTERVAL_SECONDS):
                break
        try:
            forget(self.name)
        except Exception as exc:
            logger.warning("auditq heartbeat: could not delete %r's row: %s", self.name, exc)
        finally:
            connections[alias].close()
