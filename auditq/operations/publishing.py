"""Runs whose next step is due -> step messages (after commit, and by the relay's sweep)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from auditq import conf
from auditq.operations import catalog

if TYPE_CHECKING:
    pass


logger = logging.getLogger("auditq")

RUN = "auditq.tasks.run_operation_step"


def queue_of(name: str) -> str | None:
    found = catalog.find(name)
    return (found.queue if found else None) or conf.get().QUEUE


def on_runs_due(sender: Any, ids: list[int], using: str, **kwargs: Any) -> None:
    """``operation_runs_due``: runs made due by a retry are published at once."""
    _publish_quietly(ids, using)


def publish_after_commit(ids: list[int], using: str) -> None:
    transaction.on_commit(lambda: _publish_quietly(ids, using), using=using)


def _publish_quietly(ids: list[int], using: str) -> None:
    try:
        publish_due(using, ids=ids)
    except Exception as exc:  # the relay in the workers publishes them on its next round
        logger.warning("auditq: operation runs %s not published yet (%s)", ids, exc)


def publish_due(
    using: str, app: Any = None, connection: Any = None, *, ids: list[int] | None = None
) -> int:
    """Publish the runs whose next step is due, or whose lease expired; return how many.

    The relay's sweeper. A run is claimed before it is published and published again if
    still waiting ``RELAY_AFTER_SECONDS`` later.
    """
    # Deferred: auditq/__init__ exports Operation (which publishes), imported while models load.
    from auditq.delivery import relay
    from auditq.models import OperationRun

    now = timezone.now()
    Status = OperationRun.Status
    due = OperationRun.objects.using(using).filter(
        Q(status=Status.PENDING, next_attempt_at__lte=now)
        | Q(status=Status.RUNNING, leased_until__lte=now),
    )
    if ids is not None:
        due = due.filter(pk__in=ids)
    return relay.publish_rows(
        due,
        task=RUN,
        label="name",
        queue_of=queue_of,
        using=using,
        app=app,
        connection=connection,
    )
