"""Celery application of the example project.

Start a worker with ``celery -A example_project worker -l info`` (and beat, for the
periodic relay, with ``celery -A example_project beat``).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")

# Every CELERY_* Django setting configures Celery (CELERY_BROKER_URL -> broker_url, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")

# Finds tasks.py in every installed app, auditq's included.
app.autodiscover_tasks()
