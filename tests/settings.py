"""Settings for the test suite: PostgreSQL when DATABASE_URL says so, else a SQLite file.

A file, not SQLite's in-memory database, so that the Celery worker processes started by
the integration tests see the data. A worker is pointed at the test database itself
through AUDITQ_TEST_WORKER_DB.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "auditq",  # before admin: its admin templates add the audit trail button
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "tests.testapp",
    "tests.shapesapp",
    "tests.discoveredapp",  # its handlers module is found by auditq, imported by nobody
    "example_project.fundraising",  # the README's example flow, tested like the rest
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "auditq.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
# The admin's exports go to the default storage: here, a folder the tests point their
# worker processes at too.
MEDIA_ROOT = os.environ.get("AUDITQ_TEST_MEDIA_ROOT") or str(BASE_DIR / ".test-media")
if os.environ.get("AUDITQ_TEST_EMAIL_DIR"):  # a worker's mail, where its test reads it
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["AUDITQ_TEST_EMAIL_DIR"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_url = os.environ.get("DATABASE_URL", "")
# One test database per run, so that runs on one machine never drop each other's.
_run = os.getpid()
_worker_db = os.environ.get("AUDITQ_TEST_WORKER_DB")
if _url.startswith(("postgres://", "postgresql://")):
    _parts = urlsplit(_url)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _worker_db or unquote(_parts.path.lstrip("/")) or "postgres",
            "USER": unquote(_parts.username or ""),
            "PASSWORD": unquote(_parts.password or ""),
            "HOST": _parts.hostname or "",
            "PORT": str(_parts.port or ""),
            "TEST": {"NAME": f"test_auditq_{_run}"},
        }
    }
    if os.environ.get("AUDITQ_TEST_PG_IDLE_SECONDS"):
        # Workers on other hosts (tests/integration/test_hosts.py): PostgreSQL ends a
        # session left idle in a transaction this long (its host cut off mid-transaction),
        # and its locks go with it.
        _idle = int(float(os.environ["AUDITQ_TEST_PG_IDLE_SECONDS"]) * 1000)
        DATABASES["default"]["OPTIONS"] = {
            "options": f"-c idle_in_transaction_session_timeout={_idle}"
        }
    INSTALLED_APPS += ["django.contrib.postgres", "tests.pgapp"]
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _worker_db or str(BASE_DIR / ".test.sqlite3"),
            "TEST": {"NAME": str(BASE_DIR / f".test-suite-{_run}.sqlite3")},
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }

CELERY_BROKER_URL = os.environ.get("AUDITQ_TEST_BROKER_URL", "memory://")
if CELERY_BROKER_URL.startswith("amqp"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}  # as the README recommends
if os.environ.get("AUDITQ_TEST_QUORUM") == "1":
    # The README's RabbitMQ set-up: auditq's queue a quorum queue, bound to a topic
    # exchange so that a countdown uses Celery's native delayed delivery.
    from kombu import Exchange, Queue

    CELERY_TASK_QUEUES = [
        Queue(
            "auditq-tests",
            Exchange("auditq-tests", type="topic"),
            routing_key="auditq-tests",
            queue_arguments={"x-queue-type": "quorum"},
        )
    ]
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True  # task names in django-celery-results (the dashboard's links)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = os.environ.get("AUDITQ_TEST_EAGER", "1") == "1"
# The test project's own tasks go where the tests' workers listen (tests.conftest.QUEUE).
CELERY_TASK_ROUTES = {"tests.testapp.tasks.*": {"queue": "auditq-tests"}}

AUDITQ = {
    "QUEUE": os.environ.get("AUDITQ_TEST_QUEUE", "auditq-tests"),
    "PUBLISH_TIMEOUT": 0.5,
    # Worker processes of the integration tests may be told to poll slowly (to show that
    # PostgreSQL's notification wakes them) or to leave relaying to the test.
    "RELAY_POLL_SECONDS": float(os.environ.get("AUDITQ_TEST_RELAY_POLL_SECONDS", "0.2")),
    "NOTIFY": os.environ.get("AUDITQ_TEST_NOTIFY", "1") == "1",
    "RELAY_IN_WORKER": os.environ.get("AUDITQ_TEST_RELAY_IN_WORKER", "1") == "1",
    # The fault suite's workers re-publish lost work after seconds, not a minute.
    "RELAY_AFTER_SECONDS": float(os.environ.get("AUDITQ_TEST_RELAY_AFTER_SECONDS", "60")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,  # keep Celery's task logs in the workers' output
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"auditq": {"handlers": ["console"], "level": "INFO"}},
}
