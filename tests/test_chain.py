"""The tamper-evident trail: each entry is chained to the one before it in its model's
chain, and ``auditq_verify`` finds the first entry edited, deleted or inserted behind
auditq's back."""

import datetime
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from io import StringIO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from auditq import chain
from auditq.chain import verify
from auditq.chain.canonical import GENESIS, entry_hash
from auditq.checks import check_settings
from auditq.consumers import audit
from auditq.delivery import recording
from auditq.models import AuditChain, AuditChainLane, AuditEntry, Outbox
from tests.conftest import ROOT
from tests.helpers import entry, worker_row
from tests.testapp.models import Chosen, Document

pytestmark = pytest.mark.django_db(transaction=True)


def check(*args: str) -> str:
    out = StringIO()
    call_command("auditq_verify", *args, stdout=out)
    return out.getvalue()


def chained(model) -> list[AuditEntry]:
    content_type = ContentType.objects.get_for_model(model)
    return list(AuditEntry.objects.filter(content_type=content_type).order_by("id"))


def recompute(entries: list[AuditEntry]) -> list[str]:
    """The hashes, recomputed from the entries as the ORM reads them."""
    found, previous = [], GENESIS
    for row in entries:
        content = {name: getattr(row, name) for name in verify.COLUMNS[1:-1]}
        previous = entry_hash(previous, content)
        found.append(previous)
    return found


def documents(count: int) -> list[Document]:
    made = [Document.objects.create(title=f"doc {n}") for n in range(count)]
    Chosen.objects.create(name="another chain")
    return made


def test_each_entry_is_chained_to_the_one_before_it_in_its_models_chain():
    with transaction.atomic():  # one batch
        first = Document.objects.create(title="a", data={"n": 1.5})
        Chosen.objects.create(name="t")
    first.title = "b"
    first.save()

    entries = chained(Document)
    assert [e.chain_hash for e in entries] == recompute(entries)
    assert len({e.chain_hash for e in entries}) == 2
    head = AuditChainLane.objects.get(content_type=ContentType.objects.get_for_model(Document))
    assert (head.lane, head.last_hash, head.last_entry_id) == (
        0,
        entries[-1].chain_hash,
        entries[-1].pk,
    )
    [tag] = chained(Chosen)
    assert tag.chain_hash == recompute([tag])[0]


def test_an_intact_trail_verifies(django_capture_on_commit_callbacks):
    documents(3)

    said = check()

    assert "testapp.document: intact (3 entries)" in said
    assert "testapp.chosen: intact (1 entries)" in said
    assert said.endswith("The audit trail is intact (2 chains).\n")


def test_values_whose_json_form_the_database_changes_still_verify():
    Document.objects.create(
        title="ünïcode ✓",
        data={"big": 1e16, "far": 1e300, "five": 5.0, "tiny": 1e-7, "zero": -0.0, "huge": 2**70},
    )

    assert check("--model", "testapp.Document").startswith("testapp.document: intact (1 ")


def test_an_edited_entry_breaks_the_chain_at_that_entry():
    made = documents(3)
    second = chained(Document)[1]
    AuditEntry.objects.filter(pk=second.pk).update(object_repr="forged")

    with pytest.raises(CommandError, match=f"testapp.document at entry {second.pk}"):
        check()
    assert made


def test_an_edited_json_value_breaks_the_chain():
    documents(2)
    first = chained(Document)[0]
    AuditEntry.objects.filter(pk=first.pk).update(changes={"title": [None, "forged"]})

    with pytest.raises(CommandError, match=f"at entry {first.pk}"):
        check()


def test_a_deleted_entry_breaks_the_chain_at_the_entry_after_it():
    documents(3)
    _, second, third = chained(Document)
    second.delete()

    with pytest.raises(CommandError, match=f"testapp.document at entry {third.pk}"):
        check()


def test_a_deleted_last_entry_is_named():
    documents(3)
    last = chained(Document)[-1].pk
    AuditEntry.objects.filter(pk=last).delete()

    out = StringIO()
    with pytest.raises(CommandError, match=f"at entry {last}"):
        call_command("auditq_verify", stdout=out)
    assert f"entry {last}, the last of lane 0, is missing" in out.getvalue()


def test_an_inserted_entry_breaks_the_chain_at_that_entry():
    made = documents(2)
    forged = entry(made[0], object_repr="inserted")

    with pytest.raises(CommandError, match=f"testapp.document at entry {forged.pk}"):
        check()


def test_an_inserted_entry_with_a_rightly_computed_hash_is_found_by_the_head():
    made = documents(2)
    last = chained(Document)[-1]
    forged = entry(made[0], object_repr="inserted")
    forged.chain_hash = recompute([*chained(Document)])[-1]
    # Recomputing from the real chain: the forger knows the algorithm.
    content = recompute_one(last.chain_hash, forged)
    AuditEntry.objects.filter(pk=forged.pk).update(chain_hash=content)

    with pytest.raises(CommandError, match=f"at entry {forged.pk}"):
        check()


def recompute_one(previous: str, row: AuditEntry) -> str:
    content = {name: getattr(row, name) for name in verify.COLUMNS[1:-1]}
    return entry_hash(previous, content)


def test_each_broken_chain_is_reported_and_the_others_verify():
    documents(2)
    [tag] = chained(Chosen)
    AuditEntry.objects.filter(pk=tag.pk).update(action="delete")

    out = StringIO()
    with pytest.raises(
        CommandError, match=f"The audit trail is broken: testapp.chosen at entry {tag.pk}"
    ):
        call_command("auditq_verify", stdout=out)
    assert "testapp.document: intact (2 entries)" in out.getvalue()


def test_model_checks_that_chain_only():
    documents(2)
    [tag] = chained(Chosen)
    AuditEntry.objects.filter(pk=tag.pk).update(action="delete")

    assert check("--model", "testapp.Document") == (
        "testapp.document: intact (2 entries)\nThe audit trail is intact (1 chains).\n"
    )


def test_since_checks_from_the_first_entry_since_then():
    documents(3)
    first, second, _ = chained(Document)
    AuditEntry.objects.filter(pk=first.pk).update(object_repr="edited before the range")
    moment = second.occurred_at.isoformat()

    assert "testapp.document: intact (2 entries)" in check(
        "--model", "testapp.Document", "--since", moment
    )
    with pytest.raises(CommandError, match=f"at entry {first.pk}"):
        check("--model", "testapp.Document")


def test_entries_recorded_before_chaining_are_not_chained_rather_than_broken():
    older = Document.objects.create(title="x")
    AuditEntry.objects.all().delete()
    AuditChainLane.objects.all().delete()
    entry(older, object_repr="before the migration")
    older.title = "y"
    older.save()

    said = check("--model", "testapp.Document")

    assert said.startswith("testapp.document: intact (1 entries, 1 older not chained)")


@pytest.mark.parametrize("value", ["nope", "testapp.Nope", "a.b.c"])
def test_an_unknown_model_is_refused(value):
    with pytest.raises(CommandError, match=f"'{value}' is not an installed model"):
        check("--model", value)


def test_a_bad_since_is_refused():
    with pytest.raises(CommandError, match="'yesterday' is not an ISO 8601 date or time"):
        check("--since", "yesterday")


def test_a_duplicate_delivery_does_not_extend_the_chain(undelivered):
    Document.objects.create(title="replayed")
    payload = Outbox.objects.get().payload
    recording.record_waiting()
    head = AuditChainLane.objects.get()
    Outbox.objects.create(payload=payload)

    recording.record_waiting()

    assert AuditEntry.objects.count() == 1
    again = AuditChainLane.objects.get()
    assert (again.last_hash, again.last_entry_id) == (head.last_hash, head.last_entry_id)
    assert check().endswith("intact (1 chains).\n")


def test_a_batch_with_an_event_already_recorded_chains_only_the_new_ones(undelivered):
    Document.objects.create(title="first")
    payload = Outbox.objects.get().payload
    recording.record_waiting()
    Outbox.objects.create(payload=payload)  # the same event again, with a new one
    Document.objects.create(title="second")

    recording.record_waiting()

    entries = chained(Document)
    assert [e.object_repr for e in entries] == ["first", "second"]
    assert [e.chain_hash for e in entries] == recompute(entries)


def test_chain_off_records_unchained_entries(settings):
    settings.AUDITQ = {"CHAIN": False}
    Document.objects.create(title="unchained")

    [found] = AuditEntry.objects.all()
    assert found.chain_hash == ""
    assert not AuditChainLane.objects.exists()


def test_the_result_is_kept_for_the_admin():
    documents(2)
    second = chained(Document)[1]
    AuditEntry.objects.filter(pk=second.pk).update(object_pk="9")

    results = verify.verify()

    chain = AuditChain.objects.get(content_type=ContentType.objects.get_for_model(Document))
    assert chain.verified_at is not None
    assert (chain.intact, chain.broken_entry_id, chain.verified_entries) == (False, second.pk, 1)
    assert [(r.model, r.intact) for r in results] == [
        ("testapp.chosen", True),
        ("testapp.document", False),
    ]
    assert connection.vendor in ("postgresql", "sqlite")


def record_at(obj, *ages_in_days: float) -> None:
    """Entries that occurred that many days ago, recorded now, one batch each, as the
    worker records them."""
    for age in ages_in_days:
        at = timezone.now() - datetime.timedelta(days=age)
        row = worker_row(obj, at, object_repr=f"{age} days")
        chain.extend([row], "default", audit._insert)


def prune(days: str) -> None:
    call_command("auditq_prune", "--older-than", days, stdout=StringIO())


def test_a_pruned_chain_verifies_from_its_anchor():
    document = Document.objects.create(title="kept")
    AuditEntry.objects.all().delete()
    record_at(document, 400, 91, 10, 0)

    prune("90")

    assert [e.object_repr for e in chained(Document)] == ["10 days", "0 days"]
    chain_row = AuditChainLane.objects.get()
    assert chain_row.anchor_entry_id == chain_row.last_entry_id - 2
    assert check().startswith("testapp.document: intact (2 entries)")


def test_prune_keeps_an_old_entry_recorded_after_a_recent_one_until_the_chain_reaches_it():
    document = Document.objects.create(title="late")
    AuditEntry.objects.all().delete()
    record_at(document, 400, 10, 200, 0)

    prune("90")

    assert [e.object_repr for e in chained(Document)] == ["10 days", "200 days", "0 days"]
    assert check().startswith("testapp.document: intact (3 entries)")


def test_a_chain_pruned_to_nothing_goes_on_from_its_anchor():
    documents(2)

    prune("0")
    assert not AuditEntry.objects.exists()
    documents(1)

    assert "testapp.document: intact (1 entries)" in check()


def test_deleting_the_first_entry_after_the_anchor_is_found():
    document = Document.objects.create(title="kept")
    AuditEntry.objects.all().delete()
    record_at(document, 400, 10, 5, 0)
    prune("90")
    first, second, _ = chained(Document)
    first.delete()

    with pytest.raises(CommandError, match=f"at entry {second.pk}"):
        check()


def test_verify_runs_inside_a_transaction_of_the_callers():
    documents(2)

    with transaction.atomic():
        results = verify.verify(store=False)

    assert [(r.model, r.intact, r.verified) for r in results] == [
        ("testapp.chosen", True, 1),
        ("testapp.document", True, 2),
    ]


def test_chain_must_be_a_boolean(settings):
    settings.AUDITQ = {"CHAIN": "yes"}

    [error] = check_settings()

    assert error.id == "auditq.E002"
    assert error.msg == "AUDITQ['CHAIN'] must be bool, not str."


def run_verify(*args: str, **popen) -> subprocess.CompletedProcess:
    """``django-admin auditq_verify`` in a new process, on the test database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "AUDITQ_TEST_WORKER_DB": str(connection.settings_dict["NAME"]),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "django", "auditq_verify", *args]
    return subprocess.run(command, cwd=ROOT, env=env, timeout=120, text=True, **popen)


def test_a_terminal_gets_a_progress_bar():
    documents(3)
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))

    done = run_verify(stdout=subprocess.PIPE, stderr=child_side)
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
    assert "The audit trail is intact (2 chains)." in done.stdout
    assert b"4/4" in shown and b"entries" in shown


def test_a_broken_trail_exits_1_with_one_line_naming_the_entry():
    documents(2)
    first = chained(Document)[0]
    AuditEntry.objects.filter(pk=first.pk).update(actor_repr="someone else")

    done = run_verify(capture_output=True)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"CommandError: The audit trail is broken: testapp.document at entry {first.pk}."
    )
    assert f"testapp.document: broken at entry {first.pk}: its hash does not match" in done.stdout


def document_rows(document: Document, *names: str) -> list[dict]:
    """Rows as the worker hands them to ``chain.extend``, one per name."""
    return [
        worker_row(document, object_repr=name, changes={"title": ["a", name]}, remote_addr=None)
        for name in names
    ]


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite's write lock lets one transaction write at a time: every batch takes lane 0",
)
def test_concurrent_batches_of_one_model_take_a_lane_each_and_the_lanes_verify():
    document = Document.objects.create(title="lanes")  # its entry creates lane 0
    holding, done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                chain.extend(document_rows(document, "a1", "a2"), "default", audit._insert)
                holding.set()
                done.wait()  # lane 0 stays locked while the other batch records
                chain.extend(document_rows(document, "a3"), "default", audit._insert)
        except BaseException as exc:
            failures.append(exc)
            holding.set()
        finally:
            connection.close()

    def second() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '20s'")  # waiting is the bug
                chain.extend(document_rows(document, "b1", "b2"), "default", audit._insert)
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    holding.wait()
    threads[1].start()
    for thread in threads:
        thread.join()
    assert not failures, failures

    entries = chained(Document)
    assert [(e.object_repr, e.chain_lane) for e in entries] == [
        ("lanes", 0),
        ("a1", 0),
        ("a2", 0),
        ("b1", 1),
        ("b2", 1),
        ("a3", 0),
    ]
    lanes = AuditChainLane.objects.order_by("lane")
    assert [(lane.lane, lane.last_entry_id) for lane in lanes] == [
        (0, entries[5].pk),
        (1, entries[4].pk),
    ]
    assert check().startswith("testapp.document: intact (6 entries)")

    AuditEntry.objects.filter(pk=entries[3].pk).delete()  # b1: b2 no longer links
    with pytest.raises(CommandError, match=f"testapp.document at entry {entries[4].pk}"):
        check()
    AuditEntry.objects.filter(pk=entries[5].pk).update(object_repr="edited")
    [result] = [r for r in verify.verify(store=False) if r.model == "testapp.document"]
    assert (result.broken_entry_id, result.verified) == (entries[4].pk, 3)


def test_an_entry_moved_to_another_lane_breaks_the_chain():
    documents(3)
    second = chained(Document)[1]
    AuditEntry.objects.filter(pk=second.pk).update(chain_lane=1)

    with pytest.raises(CommandError, match=f"testapp.document at entry {second.pk}"):
        check()


def test_an_unchained_entry_in_a_lane_after_the_chain_started_is_a_break():
    made = documents(2)
    forged = entry(made[0], object_repr="inserted")
    AuditEntry.objects.filter(pk=forged.pk).update(chain_lane=3)

    with pytest.raises(CommandError, match=f"testapp.document at entry {forged.pk}"):
        check()
