"""Django settings of the worker bench (``bench/worker.py``), driven by the environment.

- ``BENCH_DB_NAME``: the throwaway PostgreSQL database ``worker.py`` created, on the
  server ``DATABASE_URL`` points at (default ``postgres://postgres@127.0.0.1:5432/test``);
- ``REDIS_URL``: the broker (default ``redis://127.0.0.1:6379/15``);
- ``BENCH_QUEUE``: auditq's queue, which the worker consumes with ``-Q``;
- ``BENCH_CONN_MAX_AGE``: Django's ``CONN_MAX_AGE`` (default 0, Django's default: a
  connection per request, and in a worker a new connection per task);
- ``BENCH_CHAIN``: ``0`` turns ``AUDITQ["CHAIN"]`` off (the chaining comparison).

The Celery settings are the ones auditq's README recommends for production.
"""

import os

from benchdb import postgres_settings, postgres_url

SECRET_KEY = "auditq-worker-bench"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "auditq",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_celery_results",
    "benchapp",
]

DATABASES = {
    "default": {
        **postgres_settings(postgres_url(), os.environ["BENCH_DB_NAME"]),
        "CONN_MAX_AGE": float(os.environ.get("BENCH_CONN_MAX_AGE", "0")) or 0,
    }
}

AUDITQ = {"QUEUE": os.environ.get("BENCH_QUEUE", "auditq-bench-worker")}
if os.environ.get("BENCH_NOTIFY") == "0":  # worker.py --no-notify
    AUDITQ.update({"NOTIFY": False, "RELAY_POLL_SECONDS": 0.05})
if os.environ.get("BENCH_CHAIN") == "0":  # worker.py's chaining comparison
    AUDITQ["CHAIN"] = False

CELERY_BROKER_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"auditq": {"handlers": ["console"], "level": "WARNING"}},
}
