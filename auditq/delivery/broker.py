"""Celery plumbing: the project's app, eager mode, broker connections, JSON messages."""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS
from django.dispatch import receiver

from auditq import conf
from auditq.stream.context import HEADER

logger = logging.getLogger("auditq")

DELIVER = "auditq.tasks.deliver"


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


def broker_connection(app: Any) -> Any:
    """A new broker connection for publishing, with ``PUBLISH_TIMEOUT`` on every socket.

    Each transport reads the options it knows and ignores the others: Redis the
    ``socket_*`` ones, AMQP (py-amqp) ``read_timeout`` and ``write_timeout``, which also
    bound the wait for a publisher confirm (``confirm_publish``); both take
    ``connect_timeout`` for the connection and its handshake.
    """
    timeout = conf.get().PUBLISH_TIMEOUT
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "read_timeout": timeout,
        "write_timeout": timeout,
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

    The message carries no audit context: the work of a row (a change, a handler run, an
    operation step) runs in the row's own context, the change's or the run's starter's,
    never in that of whoever relays it (a command, a task, a request's commit).

    Raises:
        BrokerUnavailable: the broker refused, failed or timed out.
    """
    options = {
        "queue": queue,
        "countdown": countdown,
        "serializer": "json",
        "retry": False,
        "headers": {HEADER: None},  # kept as given: see task_context.add_header
    }
    try:
        if connection is None:
            with broker_connection(app) as fresh:
                app.send_task(task, args, connection=fresh, **options)
        else:
            app.send_task(task, args, connection=connection, **options)
    except ImportError:
        raise  # a broken install (say, the transport's dependencies), not an outage
    except Exception as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
