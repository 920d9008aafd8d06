"""``auditq_export``: the entries oldest first, as JSON Lines or CSV, filtered by model and
time, to a file or stdout; bad input is one clear line and a non-zero exit."""

import csv
import datetime
import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from auditq import exports
from tests.helpers import entry, manage
from tests.testapp.models import Account, Document

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


@pytest.fixture
def trail(undelivered):
    """Four entries of two models, written out of time order (as workers may record them)."""
    document = Document.objects.create(title="Report")
    account = Account.objects.create(name="Finance")
    admin = User.objects.create_user("admin")
    return [
        entry(document, "update", {"title": ["Draft", "Report"]}, at=at(20), actor=admin),
        entry(document, "create", {"title": [None, "Draft"]}, at=at(0), actor=admin),
        entry(
            account,
            "update",
            {"name": ["Fin", "Finance"]},
            at=at(10),
            remote_addr="10.0.0.1",
            request_id="req-1",
            context={"reason": "typo", "big": 2**70},
        ),
        entry(account, "delete", {}, at=at(30)),
    ]


def export(*arguments: str) -> str:
    out = io.StringIO()
    call_command("auditq_export", *arguments, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def jsonl(*arguments: str) -> list[dict]:
    return [json.loads(line) for line in export("--format", "jsonl", *arguments).splitlines()]


def test_jsonl_writes_every_entry_oldest_first_with_the_documented_keys(trail):
    update, create, account_update, delete = trail

    found = jsonl()

    assert [row["id"] for row in found] == [create.pk, account_update.pk, update.pk, delete.pk]
    assert list(found[0]) == list(exports.COLUMNS)
    assert found[0] == {
        "id": create.pk,
        "event_id": str(create.event_id),
        "model": "testapp.document",
        "object_pk": str(create.object_pk),
        "object_repr": "Report",
        "action": "create",
        "changes": {"title": [None, "Draft"]},
        "actor": "admin",
        "actor_id": create.actor_id,
        "remote_addr": None,
        "request_id": "",
        "context": {},
        "occurred_at": "2026-03-01T12:00:00+00:00",
    }
    assert found[1]["remote_addr"] == "10.0.0.1"
    assert found[1]["request_id"] == "req-1"
    assert found[1]["context"] == {"reason": "typo", "big": 2**70}  # beyond 64 bits, exact
    assert found[1]["actor"] == "" and found[1]["actor_id"] is None


def test_csv_has_a_header_of_the_same_names_and_json_text_for_changes_and_context(trail):
    text = export("--format", "csv")

    header, *rows = list(csv.reader(io.StringIO(text)))
    assert header == list(exports.COLUMNS)
    assert len(rows) == 4
    second = dict(zip(header, rows[1], strict=True))
    assert second["model"] == "testapp.account"
    assert json.loads(second["changes"]) == {"name": ["Fin", "Finance"]}
    assert json.loads(second["context"]) == {"reason": "typo", "big": 2**70}
    assert second["occurred_at"] == "2026-03-01T12:10:00+00:00"
    assert second["actor_id"] == ""


def test_model_since_and_until_filter_the_entries(trail):
    update, create, account_update, delete = trail

    assert [row["id"] for row in jsonl("--model", "testapp.Document")] == [create.pk, update.pk]
    assert [row["id"] for row in jsonl("--since", at(10).isoformat())] == [
        account_update.pk,
        update.pk,
        delete.pk,
    ]
    assert [row["id"] for row in jsonl("--until", at(10).isoformat())] == [create.pk]
    between = jsonl(
        "--model", "testapp.account", "--since", "2026-03-01T12:05", "--until", "2026-03-01T12:30Z"
    )
    assert [row["id"] for row in between] == [account_update.pk]


def test_a_date_alone_is_midnight_in_the_current_time_zone(trail, settings):
    settings.TIME_ZONE = "UTC"

    assert jsonl("--since", "2026-03-02") == []
    assert len(jsonl("--until", "2026-03-02")) == 4


def test_output_writes_a_file_and_says_so(trail, tmp_path):
    target = tmp_path / "trail.jsonl"
    err = io.StringIO()

    call_command("auditq_export", "--format", "jsonl", "--output", str(target), stderr=err)

    assert len(target.read_text().splitlines()) == 4
    assert err.getvalue() == f"Exported 4 audit entries to {target}.\n"


def test_entries_of_many_fetches_keep_their_order(undelivered, monkeypatch):
    document = Document.objects.create(title="Busy")
    written = [entry(document, at=at(minute % 7), object_repr=str(minute)) for minute in range(25)]
    monkeypatch.setattr(exports, "CHUNK_SIZE", 3)
    monkeypatch.setattr("auditq.management.commands.auditq_export.BATCH", 4)

    found = jsonl()

    expected = sorted(written, key=lambda e: (e.occurred_at, e.pk))
    assert [row["id"] for row in found] == [e.pk for e in expected]


def test_an_empty_trail_exports_nothing_and_a_csv_header(undelivered):
    assert export("--format", "jsonl") == ""
    assert export("--format", "csv").splitlines() == [",".join(exports.COLUMNS)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--format", "jsonl", "--model", "nope"], "'nope' is not an installed model"),
        (["--format", "jsonl", "--model", "testapp.Nope"], "'testapp.Nope' is not an installed"),
        (["--format", "jsonl", "--since", "yesterday"], "'yesterday' is not an ISO 8601"),
        (["--format", "jsonl", "--until", "2026-13-01"], "'2026-13-01' is not an ISO 8601"),
        (
            ["--format", "csv", "--since", "2026-03-02", "--until", "2026-03-01"],
            r"--since \(2026-03-02T00:00:00\+00:00\) must be before --until",
        ),
        (["--format", "csv", "--database", "other"], "unknown database alias 'other'"),
        (["--format", "csv", "--output", "/nonexistent/dir/x.csv"], "--output /nonexistent/dir"),
    ],
)
def test_bad_input_is_a_command_error(undelivered, arguments, message):
    with pytest.raises(CommandError, match=message):
        export(*arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (
            ["--format", "csv", "--model", "x.Y"],
            "argument --model: 'x.Y' is not an installed model",
        ),
        (["--format", "csv", "--since", "soon"], "argument --since: 'soon' is not an ISO 8601"),
        ([], "the following arguments are required: --format"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(arguments, message):
    result = manage("auditq_export", *arguments)

    assert result.returncode != 0
    [line] = result.stderr.splitlines()  # one line, no usage block, no traceback
    assert message in line


@pytest.mark.django_db(transaction=True)
def test_a_process_writes_to_stdout_with_output_dash(undelivered):
    document = Document.objects.create(title="Report")
    written = entry(document, at=at(0))

    result = manage("auditq_export", "--format", "jsonl", "--output", "-", test_database=True)

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line)["event_id"] == str(written.event_id)
    # No progress bar: stderr is not a terminal. The summary keeps out of the data.
    assert result.stderr == "Exported 1 audit entry to stdout.\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_a_progress_bar_of_every_entry(trail, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    export("--format", "jsonl")

    assert "4/4" in terminal.getvalue()
