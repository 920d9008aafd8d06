"""The relay: committed rows become messages; a failed publish leaves them due at once."""

import itertools
import threading
import time

import pytest
from django.db import transaction

from auditq.delivery import broker, recording, relay, worker
from auditq.models import Outbox
from tests.celery_app import app as celery_app
from tests.conftest import wait_for
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(undelivered, monkeypatch, settings):
    """Record what the relay would publish instead of publishing it."""
    messages = []

    def publish(outbox_ids, using="default", app=None, connection=None):
        messages.append(list(outbox_ids))

    monkeypatch.setattr(broker, "publish", publish)
    return messages


def test_fresh_rows_are_published_in_batches(sent, settings):
    settings.AUDITQ = {**settings.AUDITQ, "RELAY_BATCH_SIZE": 2}
    for number in range(5):
        Document.objects.create(title=str(number))

    assert relay.relay(fresh=True) == 5
    ids = sorted(Outbox.objects.values_list("id", flat=True))
    assert sent == [ids[0:2], ids[2:4], ids[4:5]]
    assert relay.relay(fresh=True) == 0  # claimed: not sent again


def test_a_claimed_row_is_published_again_only_once_it_is_stale(sent):
    Document.objects.create(title="x")
    relay.relay(fresh=True)

    assert relay.relay(older_than=3600) == 0
    assert relay.relay(older_than=0) == 1
    assert len(sent) == 2


def test_a_failed_publish_leaves_the_rows_due_at_once(undelivered, monkeypatch):
    def broken(outbox_ids, using="default", app=None, connection=None):
        raise broker.BrokerUnavailable("ConnectionError: refused")

    with transaction.atomic():
        Document.objects.create(title="a")
    Document.objects.create(title="b")
    monkeypatch.setattr(broker, "publish", broken)

    with pytest.raises(broker.BrokerUnavailable):
        relay.relay(fresh=True)

    assert list(Outbox.objects.values_list("relayed_at", flat=True)) == [None, None]
    monkeypatch.undo()
    sent = []
    monkeypatch.setattr(broker, "publish", lambda ids, *args, **kwargs: sent.append(ids))
    assert relay.relay(fresh=True) == 2


def test_backlog_counts_rows_and_dates_the_oldest(undelivered):
    assert relay.backlog() == (0, None)
    Document.objects.create(title="a")
    Document.objects.create(title="b")

    count, oldest = relay.backlog()
    assert count == 2
    assert oldest == Outbox.objects.order_by("id").first().created_at


def test_the_relay_thread_records_new_rows_itself_until_stopped(sent):
    from auditq.models import AuditEntry

    thread = worker.RelayThread(celery_app, threads=2)
    thread.start()
    try:
        Document.objects.create(title="a")
        with transaction.atomic():
            Document.objects.create(title="b")
            Document.objects.create(title="c")
        wait_for(lambda: AuditEntry.objects.count() == 3, 10, "the three entries")
        assert not Outbox.objects.exists()
    finally:
        thread.stop()

    assert sent == []  # no broker message for rows the thread recorded itself
    Document.objects.create(title="after the stop")
    assert Outbox.objects.count() == 1


def test_a_fast_poll_still_looks_for_due_work_at_most_every_due_seconds(
    sent, settings, monkeypatch
):
    settings.AUDITQ = {**settings.AUDITQ, "NOTIFY": False, "RELAY_POLL_SECONDS": 0.01}
    swept, rounds = [], []
    monkeypatch.setattr(relay, "sweep", lambda *args: swept.append(time.monotonic()))
    record_fresh = worker.RelayThread._record_fresh
    monkeypatch.setattr(
        worker.RelayThread, "_record_fresh", lambda self: rounds.append(1) or record_fresh(self)
    )
    thread = worker.RelayThread(celery_app)
    thread.start()
    try:
        wait_for(lambda: len(swept) >= 4, 10, "four sweeps")
    finally:
        thread.stop()

    assert len(rounds) > 2 * len(swept)  # it polled far more often than it swept
    gaps = [later - earlier for earlier, later in itertools.pairwise(swept)]
    assert min(gaps) >= worker.DUE_SECONDS * 0.95, gaps


def test_a_row_the_relay_cannot_read_waits_for_the_stale_sweep(sent):
    from auditq.delivery import recording
    from auditq.stream import events

    Document.objects.create(title="fine")
    bad = Outbox.objects.create(payload='{"v": 99}')

    with pytest.raises(events.PayloadError, match=f"outbox row {bad.pk}"):
        recording.record_fresh()
    # Marked published: not retried at every round, published again once stale.
    assert list(Outbox.objects.values_list("pk", flat=True)) == [bad.pk]
    assert Outbox.objects.get().relayed_at is not None
    assert recording.record_fresh() == 0
    assert relay.relay(older_than=0) == 1
    assert sent == [[bad.pk]]


def test_start_and_stop_in_worker_run_one_thread(sent, settings):
    worker.start_in_worker(celery_app)
    worker.start_in_worker(celery_app)
    try:
        names = [t.name for t in threading.enumerate()]
        # RELAY_THREADS = 2: the one that listens and sweeps, and one helper.
        assert (names.count("auditq-relay"), names.count("auditq-relay-helper")) == (1, 1)
    finally:
        worker.stop_in_worker()
    assert not {"auditq-relay", "auditq-relay-helper"} & {t.name for t in threading.enumerate()}

    settings.AUDITQ = {**settings.AUDITQ, "RELAY_IN_WORKER": False}
    worker.start_in_worker(celery_app)
    try:
        assert "auditq-relay" not in [t.name for t in threading.enumerate()]
    finally:
        worker.stop_in_worker()  # the heartbeat runs all the same


def test_helper_threads_share_a_backlog(sent, settings, monkeypatch):
    from auditq.models import AuditEntry

    settings.AUDITQ = {**settings.AUDITQ, "RELAY_BATCH_SIZE": 5}
    for number in range(60):
        Document.objects.create(title=str(number))
    rounds: list[tuple[str, int]] = []  # (thread, events it recorded) for each round
    helped = threading.Event()  # a helper thread has recorded rows
    record_fresh = recording.record_fresh

    def recorded_by(name: str) -> int:
        return sum(recorded for thread, recorded in rounds if thread == name)

    def record_fresh_and_note_the_thread(*args, **kwargs) -> int:
        name = threading.current_thread().name
        if name == "auditq-relay" and [thread for thread, _ in rounds].count(name) == 1:
            # Its first batch was full, so it has woken the helpers: it lets one of them
            # take a batch before going on, whichever thread the database favours.
            helped.wait(10)
        recorded = record_fresh(*args, **kwargs)
        rounds.append((name, recorded))
        if recorded and name == "auditq-relay-helper":
            helped.set()
        return recorded

    monkeypatch.setattr(recording, "record_fresh", record_fresh_and_note_the_thread)
    thread = worker.RelayThread(celery_app, threads=3)
    thread.start()
    try:
        wait_for(lambda: AuditEntry.objects.count() == 60, 20, "the backlog")
    finally:
        thread.stop()
    assert not Outbox.objects.exists()
    assert len(set(AuditEntry.objects.values_list("event_id", flat=True))) == 60
    assert recorded_by("auditq-relay") + recorded_by("auditq-relay-helper") == 60, rounds
    assert recorded_by("auditq-relay") > 0, rounds
    assert recorded_by("auditq-relay-helper") > 0, rounds  # the helpers did record rows


def test_eager_follows_runtime_changes_and_configured_settings(settings):
    changes = celery_app.conf.changes
    # Not changes.get(): a pending configuration answers it from the whole configuration.
    saved = changes["task_always_eager"] if "task_always_eager" in changes else None  # noqa: SIM401
    try:
        if "task_always_eager" in changes:
            del changes["task_always_eager"]  # back to the configured value
        settings.CELERY_TASK_ALWAYS_EAGER = True  # override_settings: the cache is cleared
        assert broker.eager(celery_app) is True
        settings.CELERY_TASK_ALWAYS_EAGER = False
        assert broker.eager(celery_app) is False

        celery_app.conf.task_always_eager = True  # a run-time change is seen at once
        assert broker.eager(celery_app) is True
        celery_app.conf.update(task_always_eager=False)
        assert broker.eager(celery_app) is False
    finally:
        if saved is None:
            del changes["task_always_eager"]
        else:
            changes["task_always_eager"] = saved


class BrokenListener:
    """A backend whose notifications fail, as when the database server goes away."""

    supports_notify = True

    def listen(self, connection):
        raise OSError("server closed the connection")


def test_a_relay_that_cannot_listen_polls_and_tries_again(caplog):
    stop = threading.Event()
    wakeups = worker.Wakeups("default", stop)
    wakeups.listens, wakeups.backend = True, BrokenListener()

    assert wakeups.arm() is False  # it will not be notified: it polls
    assert wakeups.listener is None
    wakeups.wait(0.01)  # returns after its poll
    assert "LISTEN failed (server closed the connection); polling" in caplog.text
    assert wakeups.arm() is False  # and tries again at its next round
    assert caplog.text.count("LISTEN failed") == 2
