"""auditq's test suite; its Celery app loads with Django, as a project's would."""

from tests.celery_app import app as celery_app

__all__ = ["celery_app"]
