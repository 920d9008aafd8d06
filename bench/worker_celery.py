"""Celery app of the worker bench: ``celery -A worker_celery worker -Q <BENCH_QUEUE>``.

Run from ``bench/`` (or with ``bench/`` on ``PYTHONPATH``); ``worker_settings`` says which
environment variables it needs. Like a project's ``proj/celery.py``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker_settings")

app = Celery("auditq_worker_bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
