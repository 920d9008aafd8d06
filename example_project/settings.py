"""Settings of the auditq example project, driven by the environment.

Environment variables:

- ``DATABASE_URL``: ``postgres://user:password@host:port/name`` selects PostgreSQL;
  anything else (or nothing) selects SQLite at ``SQLITE_PATH`` (default ``db.sqlite3``
  next to ``manage.py``).
- ``REDIS_URL``: the Celery broker. Without it the broker is Kombu's in-memory
  transport, which only works when the worker runs in the same process
  (``python manage.py demo`` does exactly that).
- ``DEBUG`` (default ``1``; its error page hides every setting and environment
  variable named like a URL, a broker or Redis, which carry passwords),
  ``SECRET_KEY`` (an insecure default for local use).
"""

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

POSTGRES_SCHEMES = ("postgres", "postgresql")


def parse_database_url(url: str) -> dict[str, Any]:
    """Turn ``postgres://user:password@host:port/name?option=value`` into a DATABASES entry.

    Args:
        url: a PostgreSQL URL; query parameters (``sslmode=require``, ...) become
            connection ``OPTIONS``.

    Returns:
        The ``DATABASES["default"]`` dictionary for Django's PostgreSQL backend.

    Raises:
        ValueError: the URL is not a PostgreSQL URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {parts.scheme}://...")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


def database_from_env() -> dict[str, Any]:
    """The default database: PostgreSQL from ``DATABASE_URL``, else SQLite."""
    url = os.environ.get("DATABASE_URL", "")
    if url.split("://", 1)[0] in POSTGRES_SCHEMES:
        return parse_database_url(url)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH") or BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            # The demo writes from the web thread and the worker thread at once:
            # wait for the lock instead of failing, take it at BEGIN (no upgrade
            # deadlock), and let readers run beside the writer (WAL).
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


SECRET_KEY = os.environ.get(
    "SECRET_KEY", "django-insecure-auditq-example-project-do-not-use-in-production"
)
DEBUG = os.environ.get("DEBUG", "1").lower() in ("1", "true", "yes", "on")
# DEBUG's error page lists the settings and the environment: URLs with passwords hidden.
DEFAULT_EXCEPTION_REPORTER_FILTER = "example_project.errors.HiddenURLsFilter"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "auditq",  # before admin: its admin templates add the audit trail button
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "example_project.fundraising",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After AuthenticationMiddleware: the audit context needs request.user.
    "auditq.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Celery: every CELERY_* setting is read by example_project/celery.py.
REDIS_URL = os.environ.get("REDIS_URL", "")
# Without Redis, Kombu's in-memory transport: only a worker in this same process sees
# the messages. (Naming its host spares a "No hostname was supplied" warning.)
# auditq: the relay in the worker is woken by each commit on PostgreSQL; on SQLite it
# polls, here often, so that the demo's changes show up at once.
AUDITQ = {"RELAY_POLL_SECONDS": 0.05}
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"visibility_timeout": 3600}
if not REDIS_URL:
    # The in-memory transport polls its queues, by default once a second: that second
    # would be most of the commit-to-recorded lag.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.05
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True  # task names and arguments in the admin's task results
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A message is acknowledged only once its task has finished, and given back to the
# broker if the worker dies: auditq's tasks are idempotent, so redelivery is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    # Re-publishes changes whose message never reached the broker.
    "auditq-relay": {"task": "auditq.tasks.relay", "schedule": 30.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "auditq": {
            "handlers": ["console"],
            "level": os.environ.get("AUDITQ_LOG_LEVEL", "WARNING"),
            "propagate": False,
        },
    },
}
