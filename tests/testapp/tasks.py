"""A project's own Celery tasks, as the tests' worker finds them (``autodiscover_tasks``)."""

from celery import shared_task

from auditq.stream.context import current, resolve_actor
from tests.testapp.models import Document


@shared_task(name="tests.testapp.tasks.retitle", serializer="json")
def retitle(pk: int, title: str) -> None:
    """An audited change made in a task."""
    document = Document.objects.get(pk=pk)
    document.title = title
    document.save()


@shared_task(name="tests.testapp.tasks.seen", serializer="json")
def seen() -> dict:
    """The context the task runs in, as ``(actor key, request id, extra)``."""
    context = current()
    return {
        "actor": list(resolve_actor(context.actor)),
        "request_id": context.request_id,
        "extra": dict(context.extra),
    }
