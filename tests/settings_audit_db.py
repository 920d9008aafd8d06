"""The suite's settings with the audit entries in a PostgreSQL database of their own.

``AUDITQ["DATABASE"] = "audit"`` and ``auditq.routers.AuditRouter``; the application's
database stays what ``tests.settings`` makes it (PostgreSQL or SQLite), so both pairs are
tested. ``tests/run.sh`` runs ``tests/audit_db`` with these settings (and the rest of the
suite without them). A worker is pointed at the audit test database through
AUDITQ_TEST_WORKER_AUDIT_DB.
"""

import os
from urllib.parse import unquote, urlsplit

from tests.settings import *  # noqa: F403
from tests.settings import AUDITQ, DATABASES, INSTALLED_APPS, _run

_audit = urlsplit(
    os.environ.get("AUDITQ_TEST_AUDIT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
)
DATABASES = {
    **DATABASES,
    "audit": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("AUDITQ_TEST_WORKER_AUDIT_DB")
        or unquote(_audit.path.lstrip("/"))
        or "postgres",
        "USER": unquote(_audit.username or ""),
        "PASSWORD": unquote(_audit.password or ""),
        "HOST": _audit.hostname or "",
        "PORT": str(_audit.port or ""),
        "TEST": {"NAME": f"test_auditq_audit_{_run}"},
    },
}
DATABASE_ROUTERS = ["auditq.routers.AuditRouter"]
AUDITQ = {**AUDITQ, "DATABASE": "audit"}
INSTALLED_APPS = [*INSTALLED_APPS, "tests.stallapp"]
