#!/usr/bin/env python
"""How long the admin dashboard takes to load (target: under 100 ms).

Usage::

    .venv/bin/python bench/dashboard.py [--repeat 15] [--warmup 2]

The script configures a minimal project itself (the admin, ``django_celery_results``,
auditq; a throwaway SQLite file; the broker at ``REDIS_URL``, default
``redis://127.0.0.1:6379/15``), migrates, and signs in a superuser with Django's test
``Client``. It then times ``client.get()`` of ``/admin/auditq/auditentry/dashboard/``
(middleware, view, every figure's queries and broker round trips, template): ``--warmup``
untimed loads, then ``--repeat`` timed ones, with Django's cache cleared before each, so
that every load is one a person makes after a while (nothing reused from the last one).
It prints the median and the slowest load, with no worker running and with one whose
heartbeat is fresh. Exit status 0 when it measured, 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # auditq from this checkout

TARGET_MS = 100.0
DASHBOARD = "/admin/auditq/auditentry/dashboard/"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time the auditq dashboard (bench/README.md).")
    parser.add_argument("--repeat", type=int, default=15, help="timed loads per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed loads first")
    return parser.parse_args(argv)


def configure(database: str) -> None:
    """settings.configure() a minimal project whose URLconf is the admin."""
    import django
    from django.conf import settings

    urls = types.ModuleType("dashboardbench_urls")
    urls.urlpatterns = []  # type: ignore[attr-defined]  # filled in after django.setup()
    sys.modules["dashboardbench_urls"] = urls
    settings.configure(
        DEBUG=False,
        SECRET_KEY="auditq-dashboardbench",
        ALLOWED_HOSTS=["testserver"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "django_celery_results",
            "auditq",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "auditq.middleware.AuditContextMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="dashboardbench_urls",
        TEMPLATES=[
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
        ],
        STATIC_URL="/static/",
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": database,
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
            }
        },
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        CELERY_BROKER_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        CELERY_TASK_SERIALIZER="json",
        CELERY_ACCEPT_CONTENT=["json"],
        CELERY_RESULT_BACKEND="django-db",
        AUDITQ={"QUEUE": "auditq-bench-dashboard"},
        LOGGING={"version": 1, "disable_existing_loggers": False},
    )
    django.setup()

    from django.contrib import admin
    from django.urls import path

    urls.urlpatterns = [path("admin/", admin.site.urls)]  # type: ignore[attr-defined]


def time_loads(client, repeat: int, warmup: int) -> list[float]:
    """Milliseconds of each timed load, the cache cleared before each load."""
    from django.core.cache import cache

    timings = []
    for n in range(warmup + repeat):
        cache.clear()
        started = time.perf_counter()
        response = client.get(DASHBOARD)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"BENCH FAILED: the dashboard answered {response.status_code}")
        if n >= warmup:
            timings.append(elapsed)
    return timings


def fresh_heartbeat() -> bool:
    """Make a worker look alive, as its heartbeat would; False if this auditq has none."""
    try:
        from auditq.delivery import heartbeat
    except ImportError:
        return False
    heartbeat.beat("bench@dashboard")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="auditq-dashboardbench-") as tmp:
        try:
            configure(str(Path(tmp) / "db.sqlite3"))
            from django.contrib.auth.models import User
            from django.core.management import call_command
            from django.test import Client

            call_command("migrate", verbosity=0)
            client = Client()
            client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
        except Exception as exc:
            print(f"BENCH FAILED: set-up: {exc!r}", file=sys.stderr)
            return 2
        cases = [("no worker running", lambda: True), ("a worker's heartbeat", fresh_heartbeat)]
        print(f"Dashboard load, median of {args.repeat} (target < {TARGET_MS:.0f} ms):")
        for name, prepare in cases:
            if not prepare():
                continue
            timings = time_loads(client, args.repeat, args.warmup)
            print(
                f"  {name:<22} median {statistics.median(timings):7.1f} ms, "
                f"slowest {max(timings):7.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
