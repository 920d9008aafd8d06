"""Save one Document in autocommit mode and die with SIGKILL at a chosen moment.

``before-commit``: after the INSERT, inside the transaction auditq opened around the save.
``after-commit``: after the COMMIT, before the message is published.
"""

import os
import signal
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.db import transaction  # noqa: E402
from django.db.models.signals import post_save  # noqa: E402

from tests.testapp.models import Document  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def on_save(**kwargs) -> None:
    if sys.argv[1] == "before-commit":
        die()
    transaction.on_commit(die)


post_save.connect(on_save, sender=Document, weak=False)
Document.objects.create(title=f"crash {sys.argv[1]}")
