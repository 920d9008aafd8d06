"""Settings of the server that test_app_order.py starts: the test settings, with "auditq"
appended after the admin as people add it, on the SQLite file AUDITQ_BROWSER_DB."""

import os

import tests.celery_app  # noqa: F401  # the project's Celery app (eager: records in-process)
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS as TEST_APPS

POSTGRES_ONLY = ("django.contrib.postgres", "tests.pgapp")
INSTALLED_APPS = [app for app in TEST_APPS if app not in ("auditq", *POSTGRES_ONLY)]
INSTALLED_APPS += ["auditq"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["AUDITQ_BROWSER_DB"],
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
