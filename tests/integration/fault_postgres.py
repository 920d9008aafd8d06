"""The fault suite's "PostgreSQL restarted while workers record", in a process of its own:
its database is a private cluster (started by the test), not the test database.

Usage: fault_postgres.py BINDIR DATADIR PORT BROKER_URL LOGDIR. Migrates the cluster's
database, starts two worker processes on it, writes the workload, restarts the server
(as a crash would) while the workers record, writes more, waits for a quiet system and
prints the fault table's row as JSON on its last line.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

bindir, datadir, port, broker_url, logdir = sys.argv[1:6]
url = f"postgres://postgres@127.0.0.1:{port}/auditq"
os.environ.update(
    DJANGO_SETTINGS_MODULE="tests.settings",
    DATABASE_URL=url,
    AUDITQ_TEST_WORKER_DB="auditq",  # the cluster's database itself, not a test copy
    AUDITQ_TEST_EAGER="0",
    AUDITQ_TEST_BROKER_URL=broker_url,
)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from tests.conftest import Worker  # noqa: E402
from tests.integration import faults  # noqa: E402

call_command("migrate", verbosity=0)
cluster = faults.PrivateCluster(Path(bindir), Path(datadir), int(port))
started = [
    Worker(broker_url, Path(logdir), pool="prefork").start(AUDITQ_TEST_RELAY_AFTER_SECONDS="2")
    for _ in range(2)
]
try:
    parent = faults.team()
    faults.write(parent, 60)
    cluster.restart()  # the workers are recording the burst: every connection is cut
    faults.write(parent, 40, start=60)
    cluster.restart()
    faults.write(parent, 20, start=100)
    restarted = faults.settled(timeout=180, supervised=started)
    row = faults.measure(
        "PostgreSQL restarted while workers record, twice", parent, restarted=restarted
    )
finally:
    for worker in started:
        worker.stop()
print(json.dumps(dataclasses.asdict(row)))
