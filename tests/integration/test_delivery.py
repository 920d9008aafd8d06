"""The delivery guarantees of DESIGN.md, against Redis, worker processes and the test DB."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, transaction

from auditq import delivery
from auditq.models import AuditEntry, Outbox
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE, ROOT, wait_for
from tests.testapp.models import Account, Document

pytestmark = pytest.mark.django_db(transaction=True)


def settle(expected: int, timeout: float = 30.0, workers=None) -> list[AuditEntry]:
    """Wait until ``expected`` entries exist and nothing is left to deliver."""
    try:
        wait_for(
            lambda: AuditEntry.objects.count() >= expected and not Outbox.objects.exists(),
            timeout,
            f"{expected} entries and an empty outbox",
        )
    except AssertionError as error:
        logs = "\n".join(w.tail() for w in getattr(workers, "started", ()))
        raise AssertionError(
            f"{error}: {AuditEntry.objects.count()} entries, outbox rows "
            f"{list(Outbox.objects.values_list('id', 'relayed_at'))}\nworker logs:\n{logs}"
        ) from None
    return list(AuditEntry.objects.order_by("occurred_at", "id"))


def queued(broker) -> int:
    """Messages waiting in the queue, once this process has published what it committed."""
    assert delivery.flush(timeout=30)
    return broker.client().llen(QUEUE)


def test_create_update_delete_are_each_recorded_once(worker):
    document = Document.objects.create(title="draft", body="text")
    document.title = "final"
    document.save()
    pk = document.pk
    document.delete()

    entries = settle(3)

    assert [(e.action, e.object_pk) for e in entries] == [
        ("create", str(pk)),
        ("update", str(pk)),
        ("delete", str(pk)),
    ]
    assert entries[0].changes["title"] == [None, "draft"]
    assert entries[1].changes == {"title": ["draft", "final"]}
    assert entries[2].changes["title"] == ["final", None]
    assert entries[2].changes["body"] == ["text", None]
    assert len({e.event_id for e in entries}) == 3
    assert all(e.recorded_at >= e.occurred_at for e in entries)


def test_a_rolled_back_transaction_records_nothing(worker):
    with pytest.raises(RuntimeError), transaction.atomic():
        Document.objects.create(title="ghost")
        raise RuntimeError
    Document.objects.create(title="real")

    assert [e.object_repr for e in settle(1)] == ["real"]


def test_a_rolled_back_savepoint_is_dropped_and_the_outer_transaction_kept(broker, workers):
    with transaction.atomic():
        Document.objects.create(title="outer")
        with pytest.raises(RuntimeError), transaction.atomic():
            Document.objects.create(title="inner")
            raise RuntimeError
        Document.objects.create(title="after")

    assert queued(broker) == 1
    workers()
    assert sorted(e.object_repr for e in settle(2)) == ["after", "outer"]
    assert not Document.objects.filter(title="inner").exists()


def test_a_masked_value_is_stored_nowhere(worker):
    account = Account.objects.create(
        name="ada", pin="4321", password="hunter2", api_token="tok-XYZ", client_secret="s3cr3t"
    )
    account.pin = "9876"
    account.api_token = "tok-ABC"
    account.save()

    entries = settle(2)

    stored = json.dumps([list(AuditEntry.objects.values())], default=str)
    for secret in ("4321", "9876", "hunter2", "tok-XYZ", "tok-ABC", "s3cr3t"):
        assert secret not in stored
    assert entries[0].changes["pin"] == [None, "***"]
    assert entries[0].changes["password"] == [None, "***"]
    assert entries[1].changes == {"pin": ["***", "***"], "api_token": ["***", "***"]}


def test_a_thousand_saves_in_one_transaction_are_one_message(broker, workers):
    with transaction.atomic():
        for number in range(1000):
            Document.objects.create(title=f"doc {number}")

    assert Outbox.objects.count() == 1
    assert queued(broker) == 1
    workers()
    entries = settle(1000)
    assert len(entries) == 1000
    assert len({e.event_id for e in entries}) == 1000


def _crash(mode: str, worker_env: dict) -> int:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests/integration/crash_save.py"), mode],
        cwd=ROOT,
        env=worker_env,
        timeout=60,
    ).returncode


def test_a_process_killed_before_commit_leaves_neither_change_nor_row(worker):
    assert _crash("before-commit", worker.env) == -signal.SIGKILL

    assert not Document.objects.exists()
    assert not Outbox.objects.exists()


def test_a_process_killed_after_commit_leaves_its_row_for_the_relay(worker, broker):
    assert _crash("after-commit", worker.env) == -signal.SIGKILL

    document = Document.objects.get()
    assert Outbox.objects.count() == 1
    assert queued(broker) == 0
    assert not AuditEntry.objects.exists()

    assert delivery.relay(older_than=0) == 1
    [entry] = settle(1)
    assert entry.object_pk == str(document.pk)


def test_redis_down_at_commit_loses_nothing(broker, workers):
    broker.stop()
    started = time.monotonic()
    document = Document.objects.create(title="while redis is down")
    document.title = "still down"
    document.save()
    # Functional bounds, not benchmarks: the saves do not wait for the broker, and the
    # publisher gives up within its timeout (0.5 s) per attempt.
    assert time.monotonic() - started < 10
    assert delivery.flush(timeout=10)
    assert Outbox.objects.count() == 2

    broker.start()
    workers()
    assert delivery.relay(older_than=0) == 2
    entries = settle(2, workers=workers)
    assert [e.action for e in entries] == ["create", "update"]
    time.sleep(1)
    assert AuditEntry.objects.count() == 2


def test_a_hanging_broker_does_not_hold_the_request(broker):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections in the kernel, never answers
    celery_app.conf.broker_url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    delivery.reset_producers()
    try:
        started = time.monotonic()
        Document.objects.create(title="broker hangs")
        assert time.monotonic() - started < 10
        assert delivery.flush(timeout=10), "the publisher is stuck on a hanging broker"
        assert Outbox.objects.count() == 1
    finally:
        listener.close()


def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(workers, tmp_path):
    stalled = tmp_path / "stalled"
    doomed = workers(AUDITQ_TEST_STALL_FILE=str(stalled))
    with transaction.atomic():
        for number in range(50):
            Document.objects.create(title=f"doc {number}")

    wait_for(stalled.exists, 30, "the worker to start writing")
    doomed.kill(signal.SIGKILL)
    assert not AuditEntry.objects.exists()
    assert Outbox.objects.count() == 1

    workers()
    assert delivery.relay(older_than=0) == 1
    entries = settle(50)
    time.sleep(1)
    assert AuditEntry.objects.count() == 50
    assert len({e.event_id for e in entries}) == 50


def test_the_same_message_delivered_twice_records_once(broker, workers):
    document = Document.objects.create(title="twice")
    outbox_id = Outbox.objects.get().pk
    delivery.publish([outbox_id])
    assert queued(broker) == 2

    workers()
    wait_for(lambda: queued(broker) == 0 and not Outbox.objects.exists(), 30, "both messages")
    time.sleep(0.5)
    assert AuditEntry.objects.for_object(document).count() == 1


def test_a_row_delivered_again_after_recording_changes_nothing(worker):
    Document.objects.create(title="again")
    payload = Outbox.objects.get().payload
    settle(1)

    replay = Outbox.objects.create(payload=payload)
    delivery.publish([replay.pk])
    wait_for(lambda: not Outbox.objects.exists(), 30, "the replayed row to be consumed")
    assert AuditEntry.objects.count() == 1


def test_two_workers_and_a_relay_at_once_record_each_change_once(workers):
    workers()
    workers()
    stop = threading.Event()
    errors = []

    def relay_repeatedly():
        try:
            while not stop.is_set():
                delivery.relay(older_than=0)
                time.sleep(0.01)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    relayer = threading.Thread(target=relay_repeatedly)
    relayer.start()
    try:
        for batch in range(100):
            with transaction.atomic():
                for number in range(5):
                    Document.objects.create(title=f"{batch}-{number}")
    finally:
        stop.set()
        relayer.join()

    assert errors == []
    entries = settle(500, timeout=60)
    time.sleep(1)
    assert AuditEntry.objects.count() == 500
    assert len({e.event_id for e in entries}) == 500


def test_the_relay_command_and_periodic_task_publish_left_rows(broker, workers):
    broker.stop()
    Document.objects.create(title="left behind")
    assert delivery.flush(timeout=10)
    broker.start()
    workers()
    from django.core.management import call_command

    call_command("auditq_relay", "--older-than", "0")
    assert len(settle(1)) == 1


def test_a_row_that_cannot_be_recorded_fails_visibly_and_stays(worker):
    from django_celery_results.models import TaskResult

    poisoned = Outbox.objects.create(payload="{not json")
    delivery.publish([poisoned.pk])

    failure = wait_for(
        lambda: TaskResult.objects.filter(task_name="auditq.tasks.deliver").first(),
        30,
        "the failure to be stored",
    )
    assert failure.status == "FAILURE"
    assert "JSONDecodeError" in failure.result
    assert Outbox.objects.filter(pk=poisoned.pk).exists()
