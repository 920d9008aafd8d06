"""A consumer that holds the worker between the two commits, when told to.

It wants every change of ``Document`` and runs after the audit consumer, inside the
worker's transaction: the entries are committed in the audit database, the outbox rows
are deleted but not yet committed. With AUDITQ_TEST_STALL set (to a file path) in the
worker's environment, it writes that file and sleeps, so that a test can SIGKILL the
worker right there. auditq itself has no such hook.
"""

import os
import time
from pathlib import Path

from tests.testapp.models import Document


class StallConsumer:
    name = "stall"

    def models(self):
        return [Document]

    def capture(self, model, instance, action, changes, context, loaded):
        return 1

    def squash(self, earlier, later, action, changes):
        return 1

    def record(self, events, using):
        stall = os.environ.get("AUDITQ_TEST_STALL")
        if stall:
            Path(stall).write_text(",".join(str(event.id) for event in events))
            time.sleep(3600)
