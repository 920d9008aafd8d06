"""auditq's Celery tasks (their names are public: beat schedules name them) and the worker
hooks that start and stop the relay threads and the heartbeat. Arguments are JSON data:
row keys and a database alias."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.db import DEFAULT_DB_ALIAS, DatabaseError

from auditq.chain.verify import verify_task  # noqa: F401  (registers auditq.tasks.verify)
from auditq.consumers import callbacks, counters
from auditq.consumers.recount import recount_task  # noqa: F401  (registers auditq.tasks.recount)
from auditq.delivery import recording, relay, worker
from auditq.operations import executor
from auditq.retention import (  # noqa: F401  (registers auditq.tasks.prune and prune_runs)
    prune_runs_task,
    prune_task,
)

LEDGER_TASK: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "store_errors_even_if_ignored": True,  # failures show in django-celery-results
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "max_retries": 10,
    "serializer": "json",
}
"""Options of the tasks whose work is kept in rows (outbox rows, callback runs, operation
steps, counter deltas): the rows say what was done, so late acknowledgement and retries
are safe."""


@shared_task(name="auditq.tasks.deliver", **LEDGER_TASK)
def deliver(outbox_ids: list[int], using: str = DEFAULT_DB_ALIAS) -> int:
    """Hand the changes held in ``outbox_ids`` to their consumers; return how many.

    Late acknowledgement: a worker that dies mid-task leaves the message to be redelivered,
    and the outbox rows to the relay; both are harmless once the rows are consumed.
    """
    return recording.record_rows(outbox_ids, using)


@shared_task(name="auditq.tasks.run_callback", **LEDGER_TASK)
def run_callback(run_id: int, using: str = DEFAULT_DB_ALIAS) -> str:
    """Run one ``@after_save`` / ``@after_delete`` handler for one change; return its status.

    The handler's own failures are recorded on its ``CallbackRun`` and retried on schedule
    (not through Celery); a database error around it retries the task.
    """
    return callbacks.run(run_id, using)


@shared_task(name="auditq.tasks.flush_counters", **{**LEDGER_TASK, "retry_backoff_max": 60})
def flush_counters(using: str = DEFAULT_DB_ALIAS) -> int:
    """Apply the pending counter-cache deltas; return the parent ``UPDATE`` statements.

    Any number may run at once (each claims its own deltas); a worker that dies mid-flush
    rolls its claim back, for the next flush or the relay's sweep.
    """
    return counters.flush_due(using)


@shared_task(name="auditq.tasks.run_operation_step", **LEDGER_TASK)
def run_operation_step(run_id: int, using: str = DEFAULT_DB_ALIAS) -> str:
    """Run the due step of one ``OperationRun``; return what happened.

    The step's own failures are recorded on the run and retried on schedule (not through
    Celery); a duplicate delivery finds the step leased or done.
    """
    return executor.run(run_id, using)


@shared_task(
    name="auditq.tasks.relay",
    ignore_result=True,
    store_errors_even_if_ignored=True,
    serializer="json",
)
def relay_task(using: str = DEFAULT_DB_ALIAS) -> int:
    """Publish again the rows undelivered for ``RELAY_AFTER_SECONDS``, and the callback runs
    and operation steps that are due (a beat safety net)."""
    return relay.relay(using=using) + relay.sweep(using)


@worker_ready.connect
def _start_relay(sender: Any = None, **kwargs: Any) -> None:
    worker.start_in_worker(sender.app, getattr(sender, "hostname", None))


@worker_shutdown.connect
def _stop_relay(sender: Any = None, **kwargs: Any) -> None:
    worker.stop_in_worker()
