"""The relay thread of each worker process: records fresh rows at once (woken by
``NOTIFY`` on PostgreSQL, which only the first commit after the relay went idle sends),
and publishes and sweeps what is due; and its heartbeat."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

from auditq import conf
from auditq.backends import backend
from auditq.delivery import broker, heartbeat, recording, relay
from auditq.stream import events

logger = logging.getLogger("auditq")


DUE_SECONDS = 0.2
"""The relay looks for due work (retries, steps, overdue counters) at most this often,
however short ``RELAY_POLL_SECONDS``: that work is timed in seconds."""


class RelayThread:
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

    def _record_fresh(self) -> int:
        """Record fresh rows until none is left, RELAY_BATCH_SIZE rows a transaction;
        return how many."""
        size, total = conf.get().RELAY_BATCH_SIZE, 0
        while not self._stop.is_set():
            recorded = recording.record_fresh(self.using, size)
            if not recorded:
                break
            total += recorded
            if recorded >= size:
                self._backlog.set()  # a full round: more are waiting, wake the helpers
        return total

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
        sender = None
        while not self._stop.is_set():
            try:
                if sender is None:
                    sender = broker.broker_connection(self.app)
                self._record_fresh()
                now = time.monotonic()
                if now - last_due >= max(settings.RELAY_POLL_SECONDS, DUE_SECONDS):
                    # Due work is timed in seconds: a look at each poll is enough, not one
                    # at each commit's wake-up (nor 20 a second when the relay polls fast).
                    last_due = now
                    relay.sweep(self.using, self.app, sender)
                if now - last_sweep >= settings.RELAY_AFTER_SECONDS / 2:
                    last_sweep = now
                    relay.relay(using=self.using, app=self.app, connection=sender)
                # Idle: ask the next commit to notify, then look once more, for a commit
                # that read the flag before it was set. A busy relay never sets it (it
                # comes back here only when a round found nothing), so its writers send
                # no NOTIFY.
                if wakeups.arm() and self._record_fresh():
                    continue
            except events.PayloadError as exc:
                logger.error("auditq relay: outbox rows left for later: %s", exc)
            except broker.BrokerUnavailable as exc:
                logger.warning("auditq relay: the broker is unavailable (%s); retrying.", exc)
                _discard(sender)
                sender = None
                self._stop.wait(1.0)
            except Exception:
                logger.exception("auditq relay: a round failed; retrying.")
                close_old_connections()
                self._stop.wait(1.0)
            wakeups.wait(settings.RELAY_POLL_SECONDS)
        wakeups.close()
        _discard(sender)
        connections[self.using].close()


class Wakeups:
    """What the relay waits on between rounds: a commit's ``NOTIFY`` where the backend has
    it (on a connection of its own, re-opened after a failure), else (or with
    ``AUDITQ["NOTIFY"]`` off) just the poll interval."""

    def __init__(self, using: str, stop: threading.Event) -> None:
        self.using = using
        self.stop = stop
        self.listener: Any = None
        self.backend = backend(connections[using])
        self.listens = self.backend.supports_notify and conf.get().NOTIFY

    def arm(self) -> bool:
        """Listen, and ask the next commit that writes an outbox row to notify; return
        whether it will (``False``: the relay polls)."""
        if not self.listens:
            return False
        try:
            if self.listener is None:
                self.listener = self.backend.listen(connections[self.using])
            # Notifications queued meanwhile are stale: the round just done saw their rows.
            for _ in self.listener.notifies(timeout=0):
                pass
            self.backend.want_notify(self.listener)
        except Exception as exc:  # the driver's error: the server went away, say
            self._failed(exc)
            return False
        return True

    def wait(self, timeout: float) -> None:
        """Return when a commit notified, after ``timeout`` seconds, or at ``stop``."""
        if self.listener is None:
            self.stop.wait(timeout)
            return
        try:
            # One commit, then drop those queued meanwhile: the next round claims every
            # row they announced.
            for _ in self.listener.notifies(timeout=timeout, stop_after=1):
                pass
            for _ in self.listener.notifies(timeout=0):
                pass
        except Exception as exc:
            self._failed(exc)
            self.stop.wait(timeout)

    def _failed(self, exc: Exception) -> None:
        logger.warning("auditq relay: LISTEN failed (%s); polling until it works.", exc)
        self.close()

    def close(self) -> None:
        """Close the listening connection, if any."""
        if self.listener is not None:
            try:
                self.listener.close()
            finally:
                self.listener = None


def _discard(sender: Any) -> None:
    if sender is not None:
        try:
            sender.release()
        except Exception:
            logger.debug("auditq relay: error while closing a broker connection", exc_info=True)


_relays: list[RelayThread] = []
_heartbeats: list[heartbeat.Heartbeat] = []


def start_in_worker(app: Any, name: str | None = None) -> None:
    """Start this process's heartbeat (as ``name``, the worker's node name) and its relay
    threads, one per outbox database (``worker_ready``)."""
    if not _heartbeats:
        _heartbeats.append(heartbeat.Heartbeat(name))
        _heartbeats[0].start()
    if not _relays and conf.get().RELAY_IN_WORKER:
        threads = conf.get().RELAY_THREADS
        _relays.extend(RelayThread(app, alias, threads) for alias in relay.outbox_databases())
        for thread in _relays:
            thread.start()


def stop_in_worker() -> None:
    """Stop this process's relay threads and heartbeat (``worker_shutdown``)."""
    while _relays:
        _relays.pop().stop()
    while _heartbeats:
        _heartbeats.pop().stop()
