"""Celery tasks. Their arguments are plain JSON data: outbox row keys, never instances."""

from __future__ import annotations

from celery import shared_task
from django.db import DEFAULT_DB_ALIAS, DatabaseError

from auditq import delivery


@shared_task(
    name="auditq.tasks.deliver",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    store_errors_even_if_ignored=True,  # failures show in django-celery-results
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=10,
)
def deliver(outbox_ids: list[int], using: str = DEFAULT_DB_ALIAS) -> int:
    """Record the changes held in ``outbox_ids``; return how many entries were written.

    Late acknowledgement: a worker that dies mid-task leaves the message to be redelivered,
    and the outbox row to the relay; both are harmless when the row is already recorded.
    """
    return sum(delivery.consume(outbox_id, using) for outbox_id in outbox_ids)


@shared_task(name="auditq.tasks.relay", ignore_result=True, store_errors_even_if_ignored=True)
def relay(using: str = DEFAULT_DB_ALIAS) -> int:
    """Publish again the outbox rows older than ``RELAY_AFTER_SECONDS`` (run it with beat)."""
    return delivery.relay(using=using)
