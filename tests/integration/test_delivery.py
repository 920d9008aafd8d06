"""The delivery guarantees, against Redis, worker processes and the test database."""

import datetime
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from auditq import tasks
from auditq.delivery import relay
from auditq.delivery.broker import publish
from auditq.models import AuditEntry, Outbox
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE, ROOT, wait_for
from tests.testapp.models import Account, Document

pytestmark = pytest.mark.django_db(transaction=True)


def settle(expected: int, timeout: float = 30.0, workers=None) -> list[AuditEntry]:
    """Wait until ``expected`` entries exist, the outbox is empty and the system is quiet
    (see :func:`quiet`), so that a duplicate still on its way would be counted."""
    try:
        wait_for(
            lambda: (
                AuditEntry.objects.count() >= expected and not Outbox.objects.exists() and quiet()
            ),
            timeout,
            f"{expected} entries, an empty outbox and a quiet system",
        )
    except AssertionError as error:
        logs = "\n".join(w.tail() for w in getattr(workers, "started", ()))
        raise AssertionError(
            f"{error}: {AuditEntry.objects.count()} entries, outbox rows "
            f"{list(Outbox.objects.values_list('id', 'relayed_at'))}\nworker logs:\n{logs}"
        ) from None
    return list(AuditEntry.objects.order_by("occurred_at", "id"))


def silent_url(kind: str, port: int) -> str:
    """A broker URL of ``kind`` (``redis``, ``amqp``) to a port that accepts and never answers."""
    return (
        f"redis://127.0.0.1:{port}/0"
        if kind == "redis"
        else f"amqp://guest:guest@127.0.0.1:{port}//"
    )


def queued(broker=None) -> int:
    """Messages waiting in the test queue: of ``broker`` (the fixture), or else of the
    broker the tests publish to now (Redis or RabbitMQ, asked through kombu)."""
    if broker is not None:
        return broker.depth(QUEUE)
    with celery_app.connection_for_read() as connection:
        channel = connection.channel()
        try:
            return channel.queue_declare(queue=QUEUE, passive=True).message_count
        except connection.channel_errors:
            return 0  # never declared, or empty on Redis: nothing waits


def quiet(broker=None) -> bool:
    """Nothing left to deliver and nothing running: no row waits in the outbox (set-aside
    rows wait for a person), no message in the queue, and no live worker runs or holds a
    task (asked of the workers: a killed worker's message stays unacknowledged in Redis
    until its visibility timeout, though nothing runs it)."""
    if Outbox.objects.waiting().exists() or queued(broker):
        return False
    with celery_app.connection_for_write() as connection:  # a fresh one: Redis restarts
        inspect = celery_app.control.inspect(timeout=0.5, connection=connection)
        busy = [inspect.active() or {}, inspect.reserved() or {}]
    return not any(tasks for replies in busy for tasks in replies.values())


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

    [row] = Outbox.objects.all()
    assert [e.repr for e in row.events] == ["outer", "after"]
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


def test_a_thousand_saves_in_one_transaction_are_one_row(broker, workers):
    with transaction.atomic():
        for number in range(1000):
            Document.objects.create(title=f"doc {number}")

    assert Outbox.objects.count() == 1
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


def test_a_process_killed_inside_its_transaction_leaves_neither_change_nor_row(worker):
    assert _crash("in-transaction", worker.env) == -signal.SIGKILL

    assert not Document.objects.exists()
    assert not Outbox.objects.exists()


def test_a_process_killed_after_commit_loses_nothing(broker, worker):
    """The web process publishes nothing: the workers' relay finds the row by itself."""
    assert _crash("after-commit", worker.env) == -signal.SIGKILL

    document = Document.objects.get()
    [entry] = settle(1)
    assert entry.object_pk == str(document.pk)


def test_redis_down_at_commit_loses_nothing(broker, workers):
    workers()
    broker.stop()
    started = time.monotonic()
    document = Document.objects.create(title="while redis is down")
    document.title = "still down"
    document.save()
    # A functional bound, not a benchmark: a save never waits for the broker. (Whether
    # the workers' relay records the changes from the database now, without the broker,
    # or after it returns, is a matter of timing: both are right.)
    assert time.monotonic() - started < 5

    broker.start()
    entries = settle(2, timeout=60, workers=workers)
    assert [e.action for e in entries] == ["create", "update"]
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert AuditEntry.objects.count() == 2


def test_the_web_process_never_contacts_the_broker(broker):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections in the kernel, never answers
    celery_app.conf.broker_url = silent_url(broker.kind, listener.getsockname()[1])
    try:
        started = time.monotonic()
        Document.objects.create(title="broker hangs")
        with transaction.atomic():
            Document.objects.create(title="in a transaction")
        assert time.monotonic() - started < 5
        assert Outbox.objects.count() == 2
    finally:
        listener.close()


@pytest.mark.parametrize("path", ["relay thread", "deliver task"])
def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(broker, workers, tmp_path, path):
    stalled = tmp_path / "stalled"
    by_task = {"AUDITQ_TEST_RELAY_IN_WORKER": "0"} if path == "deliver task" else {}
    doomed = workers(AUDITQ_TEST_STALL_FILE=str(stalled), **by_task)
    with transaction.atomic():
        for number in range(50):
            Document.objects.create(title=f"doc {number}")
    if by_task:
        assert relay.relay(older_than=0) == 1

    wait_for(stalled.exists, 30, "the worker to start writing")
    doomed.kill(signal.SIGKILL)
    assert not AuditEntry.objects.exists()
    assert Outbox.objects.count() == 1

    # The doomed worker's transaction died with it: the row is back. A relay thread finds
    # it fresh; a published row is published again once stale (here at once), or
    # redelivered by Redis after its visibility timeout, whichever comes first.
    assert (Outbox.objects.get().relayed_at is None) == (not by_task)
    workers(**by_task)
    if by_task:
        published = relay.relay(older_than=0)
        # RabbitMQ hands a dead consumer's unacknowledged message to the new worker at
        # once, which may have recorded the row already; Redis waits for its timeout.
        assert published == 1 if broker.kind == "redis" else published in (0, 1)
    entries = settle(50)
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert AuditEntry.objects.count() == 50
    assert len({e.event_id for e in entries}) == 50


def test_the_same_message_delivered_twice_records_once(broker, workers):
    document = Document.objects.create(title="twice")
    outbox_id = Outbox.objects.get().pk
    publish([outbox_id])
    publish([outbox_id])
    assert queued(broker) == 2

    workers()
    wait_for(lambda: quiet(broker), 30, "both messages and the relay's")
    assert AuditEntry.objects.for_object(document).count() == 1


def test_a_row_delivered_again_after_recording_changes_nothing(broker, worker):
    Document.objects.create(title="again")
    payload = Outbox.objects.get().payload
    settle(1)

    Outbox.objects.create(payload=payload)  # the worker's relay publishes it at once
    wait_for(lambda: quiet(broker), 30, "the replayed row to be consumed")
    assert AuditEntry.objects.count() == 1


def test_two_workers_and_a_relay_at_once_record_each_change_once(broker, workers):
    workers()
    workers()
    stop = threading.Event()
    errors = []

    def relay_repeatedly():
        try:
            while not stop.wait(0.01):
                relay.relay(older_than=0)
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
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert AuditEntry.objects.count() == 500
    assert len({e.event_id for e in entries}) == 500


def test_the_relay_command_publishes_left_rows(broker, workers, capsys):
    Document.objects.create(title="left behind")
    workers(AUDITQ_TEST_RELAY_IN_WORKER="0")  # only the command publishes
    from django.core.management import call_command

    call_command("auditq_relay", "--older-than", "0")
    assert "Published 1 of 1" in capsys.readouterr().out
    assert len(settle(1)) == 1


def test_the_periodic_relay_task_publishes_left_rows(broker, workers):
    Document.objects.create(title="left behind")
    workers(AUDITQ_TEST_RELAY_IN_WORKER="0")
    # The row left undelivered for a minute (the default RELAY_AFTER_SECONDS), without
    # waiting one: its age is what the task looks at.
    Outbox.objects.update(created_at=timezone.now() - datetime.timedelta(seconds=61))
    assert tasks.relay_task.apply().get() == 1
    assert len(settle(1)) == 1


def test_a_row_that_cannot_be_recorded_is_set_aside_by_the_deliver_task(broker, workers):
    poisoned = Outbox.objects.create(payload="{not json")
    Document.objects.create(title="behind it")
    started = workers(AUDITQ_TEST_RELAY_IN_WORKER="0")
    assert relay.relay(older_than=0) == 2  # through the broker, as a stale row would go

    wait_for(lambda: quiet(broker), 30, "the message to be consumed")
    [kept] = Outbox.objects.all()
    assert kept.pk == poisoned.pk and kept.failed_at is not None
    assert "the outbox payload is not JSON" in kept.error
    assert AuditEntry.objects.get().object_repr == "behind it"
    assert f"outbox row {poisoned.pk} set aside" in started.log.read_text()
