"""auditq_prune and the auditq.tasks.prune / prune_runs tasks: old entries (or finished
runs) go, in batches, and bad input is one line, never a traceback."""

import datetime
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import uuid
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditq import retention
from auditq.models import AuditEntry, CallbackRun, OperationRun, StepRun
from tests.celery_app import app as celery_app
from tests.conftest import ROOT
from tests.helpers import entry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db


def entries_aged(*days: float) -> Document:
    """One entry per age, in days, on one document."""
    document = Document.objects.create(title="doc")
    now = timezone.now()
    for age in days:
        entry(document, at=now - datetime.timedelta(days=age), object_repr=f"{age} days")
    return document


def left() -> list[str]:
    return sorted(AuditEntry.objects.values_list("object_repr", flat=True))


def prune(*args: str) -> str:
    out = StringIO()
    call_command("auditq_prune", *args, stdout=out)
    return out.getvalue()


def test_deletes_exactly_the_entries_older_than_the_days_given():
    entries_aged(400, 91, 90.01, 89.99, 0)

    said = prune("--older-than", "90")

    assert left() == ["0 days", "89.99 days"]
    assert said.startswith("Deleted 3 audit entries older than 90 days (before ")


def test_dry_run_says_how_many_and_deletes_nothing():
    entries_aged(400, 91, 1)

    said = prune("--older-than", "90", "--dry-run")

    assert said.startswith("Would delete 2 audit entries older than 90 days")
    assert len(left()) == 3


def test_deletes_in_batches_of_the_size_given():
    entries_aged(10, 11, 12, 13, 14, 1)

    with CaptureQueriesContext(connection) as queries:
        prune("--older-than", "5", "--batch-size", "2")

    deletes = [q["sql"] for q in queries if q["sql"].upper().startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1, each by key
    assert all('"id" IN' in sql for sql in deletes), deletes
    assert left() == ["1 days"]


def test_prune_reports_each_batch():
    entries_aged(10, 11, 12, 13, 14)
    batches: list[int] = []

    deleted = retention.prune(retention.cutoff(5), batch_size=2, progress=batches.append)

    assert (deleted, batches) == (5, [2, 2, 1])


def test_the_periodic_task_prunes_too():
    entries_aged(40, 1)

    result = celery_app.tasks["auditq.tasks.prune"].apply(kwargs={"older_than_days": 30})

    assert result.get() == 1
    assert left() == ["1 days"]


def runs_aged(**ages: tuple[str, float | None]) -> None:
    """Callback and operation runs by name: ``name=(status, days since they finished)``."""
    now = timezone.now()
    for name, (status, age) in ages.items():
        finished = None if age is None else now - datetime.timedelta(days=age)
        if name.startswith("callback"):
            CallbackRun.objects.create(
                handler=name,
                event_id=uuid.uuid4(),
                model="testapp.document",
                object_pk="1",
                action="create",
                event={},
                status=status,
                finished_at=finished,
                sealed="token" if status == "failed" else "",
            )
        else:
            run = OperationRun.objects.create(
                name=name, status=status, step="s", finished_at=finished
            )
            StepRun.objects.create(run=run, branch="main", position=0, step="s", attempt=1)


def runs_left() -> list[str]:
    return sorted(
        [
            *CallbackRun.objects.values_list("handler", flat=True),
            *OperationRun.objects.values_list("name", flat=True),
        ]
    )


def test_runs_deletes_only_runs_finished_before_the_days_given_with_their_steps():
    runs_aged(
        callback_done=("succeeded", 40),
        callback_skipped=("skipped", 31),
        callback_failed=("failed", 35),
        callback_recent=("succeeded", 29),
        callback_pending=("pending", None),
        operation_done=("succeeded", 45),
        operation_cancelled=("cancelled", 60),
        operation_running=("running", None),
        operation_recent=("failed", 1),
    )
    entries_aged(400)

    said = prune("--runs", "--older-than", "30")

    assert said.startswith("Deleted 5 finished runs older than 30 days (before ")
    assert runs_left() == [
        "callback_pending",
        "callback_recent",
        "operation_recent",
        "operation_running",
    ]
    assert StepRun.objects.count() == 2  # the deleted operations' steps went with them
    assert "400 days" in left()  # entries are another prune's


def test_runs_take_their_files_with_them(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    runs_aged(export_old=("succeeded", 40), export_recent=("succeeded", 1))
    for run in OperationRun.objects.all():
        run.values = {"file": default_storage.save(f"{run.name}.jsonl", ContentFile(b"{}"))}
        run.save()

    prune("--runs", "--older-than", "30")

    assert runs_left() == ["export_recent"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export_recent.jsonl"]


def test_runs_dry_run_counts_and_deletes_nothing():
    runs_aged(callback_done=("succeeded", 40), operation_done=("failed", 40))

    assert prune("--runs", "--older-than", "30", "--dry-run").startswith(
        "Would delete 2 finished runs older than 30 days"
    )
    assert len(runs_left()) == 2


def test_the_periodic_task_prunes_runs_too():
    runs_aged(callback_done=("succeeded", 40), callback_recent=("succeeded", 1))

    result = celery_app.tasks["auditq.tasks.prune_runs"].apply(kwargs={"older_than_days": 30})

    assert result.get() == 1
    assert runs_left() == ["callback_recent"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "abc"], "argument --older-than: 'abc' is not a whole number of days"),
        (["--older-than", "-1"], "argument --older-than: must be 0 days or more, not -1"),
        (["--older-than", "nan"], "argument --older-than: 'nan' is not a whole number of days"),
        (["--older-than", "inf"], "argument --older-than: 'inf' is not a whole number of days"),
        (["--older-than", "99999999"], "argument --older-than: 99999999 days is too far back"),
        (["--older-than", "9", "--batch-size", "0"], "argument --batch-size: must be 1 or more"),
        (["--older-than", "9", "--batch-size", "x"], "argument --batch-size: 'x' is not a whole"),
        (
            ["--older-than", "9", "--batch-size", "9223372036854775808"],
            "argument --batch-size: must be at most 10,000, not 9223372036854775808",
        ),
        (["--runs", "--older-than", "9", "--batch-size", "10001"], "must be at most 10,000"),
        (["--older-than", "9", "--database", "nope"], "unknown database alias 'nope'"),
        ([], "the following arguments are required: --older-than"),
    ],
)
def test_bad_input_is_a_command_error(args, message):
    entries_aged(400)

    with pytest.raises(CommandError, match=message):
        prune(*args)

    assert len(left()) == 1


def run_prune(*args: str, **popen) -> subprocess.CompletedProcess:
    """``django-admin auditq_prune`` in a new process, on the test database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "AUDITQ_TEST_WORKER_DB": str(connection.settings_dict["NAME"]),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "django", "auditq_prune", *args]
    return subprocess.run(command, cwd=ROOT, env=env, timeout=120, text=True, **popen)


def test_bad_input_on_the_command_line_is_one_line_without_traceback():
    done = run_prune("--older-than", "abc", capture_output=True)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "__main__.py auditq_prune: error: argument --older-than: "
        "'abc' is not a whole number of days"
    )


@pytest.mark.django_db(transaction=True)
def test_a_terminal_gets_a_progress_bar():
    entries_aged(*range(100, 130))
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns

    done = run_prune(
        "--older-than", "90", "--batch-size", "7", stdout=subprocess.PIPE, stderr=child_side
    )
    os.close(child_side)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child's side is closed: everything was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)

    assert done.returncode == 0
    assert "Deleted 30 audit entries" in done.stdout
    assert b"100%" in shown and b"30/30" in shown
    assert left() == ["doc"]  # the document's own, real create entry is recent
