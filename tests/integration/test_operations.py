"""Operations against Redis and real ``celery worker`` processes."""

import os
import threading

import pytest
from django.db import connections
from django.urls import reverse
from django.utils import timezone

from auditq import audit_context
from auditq.delivery.broker import send
from auditq.models import AuditEntry, OperationRun, StepRun
from auditq.operations import RUN
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE, wait_for
from tests.testapp import operations as ops
from tests.testapp.models import Account, Document, Effect

pytestmark = pytest.mark.django_db(transaction=True)


def quiet(broker) -> bool:
    """Nothing left to do: no run pending or running, no message waiting."""
    return (
        broker.depth(QUEUE) == 0
        and not OperationRun.objects.filter(status__in=["pending", "running"]).exists()
    )


def settled(run: OperationRun, status: str, broker, timeout: float = 60) -> OperationRun:
    """Wait until ``run`` has ``status`` and the system is quiet; return it fresh."""
    wait_for(
        lambda: OperationRun.objects.filter(pk=run.pk, status=status).exists(),
        timeout,
        f"run {run.pk} to be {status}",
    )
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    run.refresh_from_db()
    return run


def completed(run: OperationRun) -> list[str]:
    """The steps of ``run`` that committed, by their effects, in order."""
    return list(
        Effect.objects.filter(object_pk=str(run.pk), handler__startswith="op:")
        .order_by("id")
        .values_list("handler", flat=True)
    )


def steps(run: OperationRun) -> list[tuple[str, str]]:
    return [
        (step.rsplit(".", 1)[1], status)
        for step, status in StepRun.objects.filter(run=run)
        .order_by("id")
        .values_list("step", "status")
    ]


def test_each_step_runs_once_in_a_worker_process(broker, worker):
    run = ops.orders.start(order=1, amount=5)

    run = settled(run, "succeeded", broker)
    assert completed(run) == ["op:charge", "op:pack", "op:receipt"]
    assert {e.pid for e in Effect.objects.all()} != {os.getpid()}
    assert steps(run) == [("charge", "succeeded"), ("pack", "succeeded"), ("receipt", "succeeded")]
    assert run.values == {"charge_id": "ch_1", "packed": True}


def test_a_branch_jumps_back_to_main_and_the_jump_is_kept(broker, worker):
    run = ops.orders.start(order=2, amount=250)

    run = settled(run, "succeeded", broker)
    assert steps(run) == [
        ("charge", "succeeded"),
        ("review", "succeeded"),
        ("receipt", "succeeded"),
    ]
    assert completed(run) == ["op:charge", "op:review", "op:receipt"]
    assert Effect.objects.get(handler="op:receipt").seen["reviewed"] is True


def test_two_starts_with_one_key_at_once_make_one_run(broker, worker):
    barrier = threading.Barrier(2)
    found: list[int] = []

    def start() -> None:
        try:
            barrier.wait(5)
            found.append(ops.orders.start(order=9, amount=5, key="order-9").pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(found) == 2 and found[0] == found[1]
    run = settled(OperationRun.objects.get(), "succeeded", broker)
    assert completed(run) == ["op:charge", "op:pack", "op:receipt"]


def test_a_step_delivered_twice_at_once_runs_once(broker, workers):
    workers()
    workers()  # both idle, waiting for a message each

    run = ops.slow_first.start(seconds=1.0)  # published after commit: one message
    send(RUN, (run.pk, "default"), app=celery_app, queue=QUEUE)  # and the same again

    run = settled(run, "succeeded", broker)
    assert completed(run) == ["op:slow", "op:second"]
    assert steps(run) == [("slow", "succeeded"), ("second", "succeeded")]


def test_a_run_whose_message_was_lost_is_revived_by_the_sweeper(broker, workers):
    run = ops.orders.start(order=3, amount=5)
    broker.drop(QUEUE)  # the message is gone (a broker that lost it)
    stale = timezone.now() - timezone.timedelta(hours=1)
    OperationRun.objects.filter(pk=run.pk).update(published_at=stale)

    workers()  # its relay thread sweeps: the run is due, and its publish is stale

    run = settled(run, "succeeded", broker)
    assert completed(run) == ["op:charge", "op:pack", "op:receipt"]


def test_a_failed_step_retried_resumes_there_and_step_one_ran_once(broker, worker):
    run = ops.flaky.start()

    run = settled(run, "failed", broker)
    assert run.error == f"RuntimeError: declined for run {run.pk}"
    assert run.values == {"token": f"t-{run.pk}"}
    Effect.objects.create(handler="allow", object_pk=str(run.pk), event_id=ops.uuid.uuid4(), pid=0)

    assert run.retry() is True

    run = settled(run, "succeeded", broker)
    assert completed(run) == ["op:first", "op:flaky-try", "op:flaky", "op:second"]
    assert Effect.objects.get(handler="op:second").seen["token"] == f"t-{run.pk}"
    assert steps(run) == [
        ("first", "succeeded"),
        ("fail_until_allowed", "failed"),
        ("fail_until_allowed", "succeeded"),
        ("second", "succeeded"),
    ]


def test_a_worker_killed_mid_step_finishes_after_restart_with_no_step_twice(
    broker, workers, tmp_path
):
    stall = tmp_path / "stalled"
    worker = workers(AUDITQ_TEST_STEP_STALL_FILE=str(stall))
    run = ops.slow_going.start()

    wait_for(stall.exists, 60, "the worker to be inside the slow step")
    worker.kill()  # SIGKILL: the step's transaction dies with it
    assert completed(run) == ["op:first"]
    workers()  # no stall this time; its relay revives the run once the 2 s lease expires

    run = settled(run, "succeeded", broker)
    assert completed(run) == ["op:first", "op:slow", "op:second"]
    assert steps(run) == [
        ("first", "succeeded"),
        ("slow", "failed"),
        ("slow", "succeeded"),
        ("second", "succeeded"),
    ]
    lost = StepRun.objects.get(run=run, status="failed")
    assert lost.error.startswith("LeaseExpired")


def test_bad_params_are_refused_and_an_unknown_branch_fails_the_run(broker, worker):
    account = Account.objects.create(name="Ada")
    with pytest.raises(TypeError, match="pass its key instead"):
        ops.orders.start(order=account, amount=5)
    assert not OperationRun.objects.exists()

    run = settled(ops.broken.start(), "failed", broker)

    assert "has no branch 'nowhere'" in run.error
    assert steps(run) == [("wrong_branch", "failed")]
    assert completed(run) == []


def test_the_admin_retries_a_failed_run(broker, worker, admin_client):
    run = settled(ops.flaky.start(), "failed", broker)
    Effect.objects.create(handler="allow", object_pk=str(run.pk), event_id=ops.uuid.uuid4(), pid=0)

    response = admin_client.post(
        reverse("admin:auditq_operationrun_changelist"),
        {"action": "retry_selected", "_selected_action": [run.pk]},
        follow=True,
    )

    assert "1 run queued for retry" in response.content.decode()
    run = settled(run, "succeeded", broker)
    assert completed(run) == ["op:first", "op:flaky-try", "op:flaky", "op:second"]


def test_each_step_in_a_worker_records_the_actor_who_started_the_run(
    broker, worker, django_user_model
):
    ada = django_user_model.objects.create(username="ada")
    document = Document.objects.create(title="before")
    with audit_context(actor=ada, request_id="req-op"):
        run = ops.retitling.start(document_id=document.pk)

    run = settled(run, "succeeded", broker)
    updates = AuditEntry.objects.for_object(document).filter(action="update")
    wait_for(lambda: updates.count() == 2, 30, "both steps' entries")
    wait_for(lambda: quiet(broker), 30, "the queue to drain")
    assert (run.actor_id, run.actor_repr) == (ada.pk, "ada")
    assert [(e.changes["title"][1], e.actor_id, e.actor_repr) for e in updates] == [
        ("first step", ada.pk, "ada"),
        ("second step", ada.pk, "ada"),
    ]
    assert {e.context["via_operation"] for e in updates} == {f"tests.retitling #{run.pk}"}
    # The steps' messages are the run's, not their publisher's: the actor comes from the run.
    assert {e.request_id for e in updates} == {""}
