"""Save one Document and die with SIGKILL at a chosen moment.

``in-transaction``: inside ``atomic()``, after the INSERT, before the COMMIT.
``after-commit``: a bare autocommit save, killed the moment it returns (committed; on
PostgreSQL the INSERT itself wrote the outbox row; nothing was published by this process).
"""

import os
import signal
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.db import transaction  # noqa: E402

from tests.testapp.models import Document  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if sys.argv[1] == "in-transaction":
    with transaction.atomic():
        Document.objects.create(title="crash in transaction")
        die()
else:
    Document.objects.create(title="crash after commit")
    die()
