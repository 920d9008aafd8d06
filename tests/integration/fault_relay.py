"""A relay process for the fault suite: it claims every due outbox row, then stops for
ever just before publishing them (after creating the file named on the command line),
for the test to SIGKILL it between the claim and the publish."""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from auditq.delivery import broker, relay  # noqa: E402


def stall(*args, **kwargs):
    Path(sys.argv[1]).touch()
    time.sleep(3600)


broker.publish = stall
relay.relay(older_than=0)
