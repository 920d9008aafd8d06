"""Operations: steps, branches, values, leases, retries, dedup and the stored path.

Steps run eagerly here (in this process, after commit); ``tests/integration/
test_operations.py`` runs them in real worker processes.
"""

import datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from auditq import checks, operations
from auditq.delivery import broker
from auditq.models import OperationRun, StepRun
from auditq.operations import Operation, OperationError, catalog, executor, publishing, retry_policy
from tests.conftest import wait_for
from tests.testapp import operations as ops
from tests.testapp.models import Account, Effect

pytestmark = pytest.mark.django_db(transaction=True)


def path_of(run: OperationRun) -> list[tuple[str, str, str]]:
    """(branch, step name, status) of each attempt, in order."""
    return [
        (branch, step.rsplit(".", 1)[1], status)
        for branch, step, status in StepRun.objects.filter(run=run)
        .order_by("id")
        .values_list("branch", "step", "status")
    ]


def effects(run: OperationRun) -> list[str]:
    return list(
        Effect.objects.filter(object_pk=str(run.pk))
        .order_by("id")
        .values_list("handler", flat=True)
    )


def allow(run: OperationRun) -> None:
    Effect.objects.create(handler="allow", object_pk=str(run.pk), event_id=ops.uuid.uuid4(), pid=0)


def test_the_steps_of_main_run_in_order_and_share_values():
    run = ops.orders.start(order=7, amount=5)

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.params == {"order": 7, "amount": 5}
    assert run.values == {"charge_id": "ch_7", "packed": True}
    assert path_of(run) == [
        ("main", "charge", "succeeded"),
        ("main", "pack", "succeeded"),
        ("main", "receipt", "succeeded"),
    ]
    assert effects(run) == ["op:charge", "op:pack", "op:receipt"]
    receipt = Effect.objects.get(handler="op:receipt")
    assert receipt.seen == {"attempt": 1, "charge_id": "ch_7", "reviewed": False}
    assert run.started_at <= run.finished_at
    assert all(s.duration is not None for s in run.steps.all())


def test_a_jump_is_never_overwritten_by_the_next_step_of_the_branch():
    run = ops.orders.start(order=8, amount=500)

    run.refresh_from_db()
    # charge jumps to "big" and carries on; review jumps back to main's receipt: pack, the
    # step after charge, never runs.
    assert path_of(run) == [
        ("main", "charge", "succeeded"),
        ("big", "review", "succeeded"),
        ("main", "receipt", "succeeded"),
    ]
    assert run.status == "succeeded"
    assert Effect.objects.get(handler="op:receipt").seen["reviewed"] is True
    assert "packed" not in run.values


def test_a_branch_that_runs_out_ends_the_run():
    def done(step):
        step.jump_to("side")

    done.__qualname__ = "done_for_test"  # a module-level name, as a real step has
    op = Operation("tests.side_end", main=[done, ops.pack], side=[ops.first])

    run = op.start()

    run.refresh_from_db()
    assert [step for _, step, _ in path_of(run)] == ["done_for_test", "first"]
    assert (run.status, run.branch, run.values) == ("succeeded", "side", {"token": f"t-{run.pk}"})


def test_nothing_runs_before_the_transaction_commits():
    with transaction.atomic():
        run = ops.orders.start(order=1, amount=1)
        assert not Effect.objects.exists()
        assert OperationRun.objects.get().status == "pending"

    run.refresh_from_db()
    assert run.status == "succeeded"


def test_a_rolled_back_start_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        ops.orders.start(order=1, amount=1)
        raise RuntimeError

    assert not OperationRun.objects.exists()
    assert not Effect.objects.exists()


def test_a_second_start_with_the_same_key_returns_the_first_run():
    first = ops.orders.start(order=3, amount=5, key="order-3")
    again = ops.orders.start(order=3, amount=5, key="order-3")

    assert again.pk == first.pk
    assert OperationRun.objects.count() == 1
    assert effects(first) == ["op:charge", "op:pack", "op:receipt"]
    other = ops.orders.start(order=3, amount=5, key="order-3b")
    assert other.pk != first.pk


def test_the_same_key_in_another_operation_is_another_run():
    one = ops.orders.start(order=3, amount=5, key="k")
    two = ops.flaky.start(key="k")

    assert one.pk != two.pk


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("1.5"), "argument 'amount' is a Decimal, which is not JSON-safe"),
        ({"a": [1, float("nan")]}, "argument 'amount'['a'][1] is nan, which JSON cannot hold"),
        ({1: "x"}, "argument 'amount' has the key 1: JSON keys are strings"),
    ],
)
def test_start_refuses_what_json_cannot_hold(value, message):
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        ops.orders.start(order=1, amount=value)
    assert not OperationRun.objects.exists()


def test_start_refuses_a_model_instance_and_says_to_pass_its_key():
    account = Account.objects.create(name="Ada")

    with pytest.raises(TypeError) as caught:
        ops.orders.start(order=account, amount=1)

    assert "argument 'order' is a model instance (Account" in str(caught.value)
    assert f"pass its key instead (e.g. account_id={account.pk})" in str(caught.value)


def test_start_refuses_a_bad_key():
    with pytest.raises(ValueError, match=r"key=\.\.\.\) takes 1 to 255 characters"):
        ops.orders.start(key="", order=1, amount=1)


def test_a_jump_to_an_unknown_branch_fails_the_run_at_once_naming_it():
    run = ops.broken.start()

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == (
        "OperationError: operation 'tests.broken' has no branch 'nowhere' "
        "(its branches: main, big)."
    )
    assert "jump_to" in run.traceback
    assert path_of(run) == [("main", "wrong_branch", "failed")]
    assert effects(run) == []  # the step's writes rolled back with it
    assert run.attempts == 1  # no retry: retrying cannot fix code


def test_a_jump_to_a_step_outside_the_branch_fails_the_run_naming_both():
    run = ops.broken_step.start()

    run.refresh_from_db()
    assert run.status == "failed"
    assert "step tests.testapp.operations.receipt is not in branch 'big'" in run.error


def test_a_failed_step_is_retried_by_hand_where_it_failed():
    run = ops.flaky.start()
    run.refresh_from_db()
    assert (run.status, run.step) == ("failed", "tests.testapp.operations.fail_until_allowed")
    assert run.error == f"RuntimeError: declined for run {run.pk}"
    assert run.values == {"token": f"t-{run.pk}"}

    allow(run)
    assert run.retry() is True

    assert run.status == "succeeded"
    # The failed attempt's own writes rolled back with it; step 1 ran once.
    assert effects(run) == ["op:first", "allow", "op:flaky-try", "op:flaky", "op:second"]
    assert Effect.objects.get(handler="op:second").seen["token"] == f"t-{run.pk}"
    assert [(step, status) for _, step, status in path_of(run)] == [
        ("first", "succeeded"),
        ("fail_until_allowed", "failed"),
        ("fail_until_allowed", "succeeded"),
        ("second", "succeeded"),
    ]
    assert run.retry() is False  # nothing to retry any more


def test_a_step_policy_retries_it_with_back_off():
    run = ops.retrying.start()
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == ("pending", 1, "ValueError: attempt 1")
    assert run.next_attempt_at > timezone.now() - datetime.timedelta(seconds=1)

    def settled():
        publishing.publish_due("default")  # what the relay in the workers does
        run.refresh_from_db()
        return run.status == "succeeded"

    wait_for(settled, 10, "the third attempt")
    # Only the attempt that succeeded left writes.
    assert effects(run) == ["op:first", "op:retried-try", "op:retried"]
    attempts = StepRun.objects.filter(run=run, step__endswith=".retried").order_by("id")
    assert [(s.attempt, s.status) for s in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]


def test_retries_run_out_then_the_run_fails():
    @retry_policy(retries=1, backoff=0.01)
    def never(step):
        raise KeyError("nope")

    never.__qualname__ = "never_for_test"
    op = Operation("tests.never", main=[never], retries=5)
    run = op.start()

    def settled():
        publishing.publish_due("default")
        run.refresh_from_db()
        return run.status == "failed"

    wait_for(settled, 10, "the second attempt")
    assert (run.attempts, run.error) == (2, "KeyError: 'nope'")


def test_an_operation_retry_policy_applies_to_steps_without_their_own():
    assert ops.orders.policy(ops.pack) == operations.RetryPolicy(3, 2.0)
    assert ops.retrying.policy(ops.retried) == operations.RetryPolicy(2, 0.05)


def test_a_pending_run_that_is_cancelled_never_runs(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.orders.start(order=1, amount=1)

    assert run.cancel() is True
    assert executor.run(run.pk, "default") == "cancelled"
    assert (run.status, effects(run)) == ("cancelled", [])
    assert run.finished_at is not None
    assert run.cancel() is False


def test_a_run_cancelled_while_its_step_runs_keeps_that_step_and_stops(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)

    def cancels(step):
        OperationRun.objects.get(pk=step.run_id).cancel()  # as another process would
        step.set("seen", True)

    cancels.__qualname__ = "cancels_for_test"
    op = Operation("tests.cancelled_mid_step", main=[cancels, ops.pack])
    run = op.start()

    assert executor.run(run.pk, "default") == "cancelled"
    run.refresh_from_db()
    assert (run.status, run.values) == ("cancelled", {"seen": True})
    assert path_of(run) == [("main", "cancels_for_test", "succeeded")]


def test_a_held_lease_turns_a_second_delivery_away(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.orders.start(order=1, amount=1)
    OperationRun.objects.filter(pk=run.pk).update(
        status="running", lease="x", leased_until=timezone.now() + datetime.timedelta(minutes=1)
    )

    assert executor.run(run.pk, "default") == "leased"
    assert not Effect.objects.exists()


def test_an_expired_lease_is_taken_over_and_the_lost_attempt_recorded(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.orders.start(order=1, amount=1)
    OperationRun.objects.filter(pk=run.pk).update(
        status="running", attempts=1, lease="x", leased_until=timezone.now()
    )
    StepRun.objects.create(run=run, branch="main", position=0, step=run.step, attempt=1)

    assert executor.run(run.pk, "default") == "pending"  # charge done, pack next

    lost, done = StepRun.objects.filter(run=run).order_by("id")
    assert (lost.status, lost.error.split(":")[0]) == ("failed", "LeaseExpired")
    assert (done.status, done.attempt) == ("succeeded", 2)
    assert effects(run) == ["op:charge"]


def test_a_step_that_outlived_its_lease_commits_nothing(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)

    def overtaken(step):
        ops.effect(step, "overtaken")
        # Another worker took the step over meanwhile (its lease had expired).
        OperationRun.objects.filter(pk=step.run_id).update(lease="someone else's")

    overtaken.__qualname__ = "overtaken_for_test"
    op = Operation("tests.overtaken", main=[overtaken])
    run = op.start()

    assert executor.run(run.pk, "default") == "lease lost"
    assert effects(run) == []


def test_step_get_of_a_missing_value_is_none_or_the_default_like_dict_get():
    seen = {}

    def reads(step):
        seen["get"] = step.get("jump")
        seen["default"] = step.get("jump", "main")
        seen["given"] = step.get("order", 0)
        seen["in"] = ("jump" in step, "order" in step)

    reads.__qualname__ = "reads_optional_for_test"
    run = Operation("tests.reads_optional", main=[reads], retries=0).start(order=1)

    run.refresh_from_db()
    assert (run.status, run.error) == (OperationRun.Status.SUCCEEDED, "")
    assert seen == {"get": None, "default": "main", "given": 1, "in": (False, True)}


def test_step_item_of_a_missing_value_fails_with_a_clear_error():
    def reads(step):
        step["nothing"]

    reads.__qualname__ = "reads_for_test"
    run = Operation("tests.reads", main=[reads], retries=0).start(order=1)

    run.refresh_from_db()
    assert run.error == (
        "KeyError: \"'nothing' is neither a start() argument nor a value set by a step "
        '(known: order)."'
    )
    assert ops.orders.start(order=1, amount=1) is not None


def test_a_step_that_sets_a_model_instance_fails():
    def sets(step):
        step.set("account", Account.objects.create(name="x"))

    sets.__qualname__ = "sets_for_test"
    run = Operation("tests.sets", main=[sets], retries=0).start()

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith("TypeError: step.set('account') value is a model instance")
    assert not Account.objects.filter(name="x").exists()


def test_a_broker_outage_leaves_the_first_step_to_the_sweeper(undelivered, monkeypatch):
    def down(*args, **kwargs):
        raise broker.BrokerUnavailable("ConnectionError: refused")

    monkeypatch.setattr(broker, "send", down)
    run = ops.orders.start(order=1, amount=1)  # the publish after commit fails, quietly
    run.refresh_from_db()
    assert (run.status, run.published_at) == ("pending", None)

    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, **kwargs: sent.append((task, args)))
    assert publishing.publish_due("default") == 1
    assert sent == [(operations.RUN, (run.pk, "default"))]
    assert publishing.publish_due("default") == 0  # claimed: not again until stale


def test_a_step_still_due_is_published_again_after_a_wait_that_doubles(
    undelivered, monkeypatch, settings
):
    settings.AUDITQ = {**settings.AUDITQ, "RELAY_AFTER_SECONDS": 60}
    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, **kwargs: sent.append(args))
    run = ops.orders.start(order=1, amount=1)

    def published(ago: float, waited: float) -> int:
        """Its last publish ``ago`` seconds back, when it had waited ``waited`` since due."""
        at = timezone.now() - datetime.timedelta(seconds=ago)
        OperationRun.objects.filter(pk=run.pk).update(
            next_attempt_at=at - datetime.timedelta(seconds=waited), published_at=at
        )
        sent.clear()
        return publishing.publish_due("default")

    assert published(ago=61, waited=0) == 1  # its first message was lost: again after 60 s
    assert published(ago=61, waited=120) == 0  # queued behind a backlog: wait as long again
    assert published(ago=121, waited=120) == 1
    assert published(ago=61, waited=10_000) == 0
    assert published(ago=16 * 60 + 1, waited=10_000) == 1  # never more than 16 x 60 s
    assert sent == [(run.pk, "default")]


def test_auditq_relay_publishes_due_steps(undelivered, monkeypatch, capsys):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.orders.start(order=1, amount=1)
    OperationRun.objects.filter(pk=run.pk).update(published_at=None)

    call_command("auditq_relay")

    assert "Published 1 due callback runs and operation steps." in capsys.readouterr().out


def test_a_run_whose_step_was_renamed_is_reported_by_a_check_and_fails_clearly(
    undelivered, monkeypatch
):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.orders.start(order=1, amount=1)
    ops.orders.start(order=2, amount=1)
    OperationRun.objects.update(step="tests.testapp.operations.charge_card")
    assert checks.check_operation_steps() == []  # a database check: asked by database

    [error] = checks.check_operation_steps(databases=["default"])

    assert error.id == "auditq.E010"
    assert error.msg.startswith(
        "2 unfinished runs of operation 'tests.orders' wait for step "
        "tests.testapp.operations.charge_card in branch 'main', which no longer resolves"
    )
    assert executor.run(run.pk, "default") == "failed"
    run.refresh_from_db()
    assert "step tests.testapp.operations.charge_card is not in branch 'main'" in run.error


def test_an_unknown_operation_fails_its_runs_clearly(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.orders.start(order=1, amount=1)
    OperationRun.objects.update(name="tests.gone", step="tests.nowhere.step")

    assert executor.run(run.pk, "default") == "failed"
    run.refresh_from_db()
    assert "no operation named 'tests.gone' is defined" in run.error
    [error] = checks.check_operation_steps(databases=["default"])
    assert "1 unfinished run of operation 'tests.gone' waits" in error.msg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"main": []}, "branch 'main' takes a non-empty list of steps"),
        ({"main": [lambda step: None]}, "is not a module-level function"),
        ({"main": [ops.pack], "retries": -1}, "retries takes a whole number from 0 to 100"),
        ({"main": [ops.pack], "backoff": 0}, "backoff takes seconds"),
        ({"main": [ops.pack], "lease": 0}, "lease takes seconds"),
        ({"main": [ops.pack], "queue": ""}, "queue takes a queue name"),
        ({"main": [ops.pack], "side": "pack"}, "branch 'side' takes a non-empty list"),
    ],
)
def test_bad_definitions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Operation("tests.bad", **kwargs)


def test_a_name_is_one_operation():
    with pytest.raises(ValueError, match="another operation already has that name"):
        Operation("tests.orders", main=[ops.pack])
    assert operations.get("tests.orders") is ops.orders
    with pytest.raises(OperationError, match=r"no operation named 'tests\.unknown'"):
        operations.get("tests.unknown")


def test_json_data_of_any_shape_is_kept_as_it_reads_back():
    run = Operation("tests.shapes", main=[ops.pack]).start(
        ratio=1.5, tags=("a", "b"), nested={"list": [1, {"x": None}], "ok": True}
    )

    run.refresh_from_db()
    assert run.params == {
        "ratio": 1.5,
        "tags": ["a", "b"],
        "nested": {"list": [1, {"x": None}], "ok": True},
    }


def test_a_step_refuses_a_key_that_is_not_a_string():
    def bad_key(step):
        step.set(1, "x")

    bad_key.__qualname__ = "bad_key_for_test"
    run = Operation("tests.bad_key", main=[bad_key], retries=0).start()

    run.refresh_from_db()
    assert run.error == "TypeError: step.set() takes a string key, not 1."


def test_retry_policy_works_bare_and_refuses_what_is_not_a_step():
    def plain(step):
        pass

    assert retry_policy(plain) is plain
    assert plain.auditq_retry_policy == operations.RetryPolicy(3, 2.0)
    with pytest.raises(TypeError, match="decorates step functions"):
        retry_policy(retries=1)("not a function")
    with pytest.raises(ValueError, match="Operation\\(\\)"):
        Operation("", main=[plain])
    assert repr(ops.orders) == "<Operation 'tests.orders'>"


def test_a_worker_imports_an_operation_by_the_path_of_its_step(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "tests.testapp.lazy_operations", raising=False)
    monkeypatch.delitem(catalog._operations, "tests.lazy", raising=False)

    found = operations.get("tests.lazy", "tests.testapp.lazy_operations.only_step")

    assert found.name == "tests.lazy"
    with pytest.raises(OperationError, match=r"no operation named 'tests\.gone'"):
        operations.get("tests.gone", "tests.testapp.nowhere.step")


def test_a_run_that_no_longer_exists_is_missing():
    assert executor.run(10**9, "default") == "missing"


def test_a_step_lost_with_no_retry_left_fails_the_run(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)
    run = ops.flaky.start()  # retries=0
    OperationRun.objects.filter(pk=run.pk).update(
        status="running", attempts=1, lease="x", leased_until=timezone.now()
    )

    assert executor.run(run.pk, "default") == "failed"
    run.refresh_from_db()
    assert run.error == "LeaseExpired: tests.testapp.operations.first never finished."
    assert effects(run) == []


def test_a_failing_step_that_lost_its_lease_leaves_the_run_to_its_new_holder(
    undelivered, monkeypatch
):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)

    def fails(step):
        raise RuntimeError("too late")

    fails.__qualname__ = "fails_for_test"
    run = Operation("tests.overtaken_fails", main=[fails]).start()

    def taken_over(attempt, using):
        raise executor._LeaseLost  # another worker holds the step now

    monkeypatch.setattr(executor, "_relock", taken_over)
    assert executor.run(run.pk, "default") == "lease lost"
    run.refresh_from_db()
    assert (run.status, run.error) == ("running", "")
    assert path_of(run) == [("main", "fails_for_test", "running")]


def test_a_run_cancelled_while_its_step_fails_stays_cancelled(undelivered, monkeypatch):
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: None)

    def declined(step):
        raise RuntimeError("card declined")

    declined.__qualname__ = "declined_for_test"
    run = Operation("tests.cancelled_fails", main=[declined]).start()
    relock = executor._relock

    def cancelled_meanwhile(attempt, using):
        OperationRun.objects.filter(pk=attempt.run.pk).update(status="cancelled")
        return relock(attempt, using)

    monkeypatch.setattr(executor, "_relock", cancelled_meanwhile)
    assert executor.run(run.pk, "default") == "cancelled"
    run.refresh_from_db()
    assert (run.status, run.lease) == ("cancelled", "")
    assert path_of(run) == [("main", "declined_for_test", "failed")]


def test_the_check_is_quiet_before_migrate(monkeypatch):
    from django.db import DatabaseError

    def no_table(using):
        raise DatabaseError("no such table: auditq_operationrun")

    monkeypatch.setattr(executor, "unresolved", no_table)
    assert checks.check_operation_steps(databases=["default"]) == []


def test_the_periodic_relay_task_publishes_due_steps(undelivered, monkeypatch):
    from auditq import tasks

    sent = []
    monkeypatch.setattr(broker, "send", lambda task, args, **kwargs: sent.append((task, args)))
    run = ops.orders.start(order=1, amount=1)
    OperationRun.objects.filter(pk=run.pk).update(published_at=None)  # its message was lost
    sent.clear()

    assert tasks.relay_task() == 1
    assert sent == [(operations.RUN, (run.pk, "default"))]


def test_a_failed_steps_error_keeps_no_masked_value_in_clear(caplog):
    run = ops.leaky.start(order=7, api_token="tok-SECRET-1")  # runs here, after commit
    run.refresh_from_db()
    secrets = ("tok-SECRET-1", f"cs-{run.pk}-hush")

    assert run.status == "failed"
    assert run.error == "PermissionError: the gateway refused *** with *** for order 7"
    [attempt] = StepRun.objects.filter(run=run)
    stored = [run.error, run.traceback, attempt.error, attempt.traceback, caplog.text]
    assert "PermissionError: the gateway refused ***" in attempt.traceback
    assert not [text for text in stored for secret in secrets if secret in text]


def test_a_step_that_reenters_itself_reports_progress_saved_with_each_chunk():
    run = ops.counting.start(upto=10, chunk=4)

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert [e.seen["done"] for e in Effect.objects.order_by("id")] == [4, 8, 10]
    assert path_of(run) == [("main", "count_up", "succeeded")] * 3
    # The total was reported once, by the first chunk; later chunks kept it.
    assert (run.progress_done, run.progress_total, run.progress) == (10, 10, 1.0)


def test_a_run_that_reports_nothing_has_no_progress():
    run = ops.orders.start(order=8, amount=5)

    run.refresh_from_db()
    assert (run.progress_done, run.progress_total, run.progress) == (None, None, None)


def test_progress_is_a_share_of_the_total_at_most_one():
    assert OperationRun(progress_done=5, progress_total=20).progress == 0.25
    assert OperationRun(progress_done=30, progress_total=20).progress == 1.0
    assert OperationRun(progress_done=3, progress_total=0).progress is None


@pytest.mark.parametrize(
    ("done", "total", "message"),
    [(-1, None, "done=-1"), (1, -5, "total=-5"), ("3", None, "done='3'"), (1, True, "total=True")],
)
def test_progress_refuses_what_is_not_a_count_and_fails_the_run(done, total, message):
    run = ops.misreporting.start(done=done, total=total)

    run.refresh_from_db()
    assert run.status == "failed"
    assert "step.progress() takes whole numbers of 0 or more" in run.error
    assert message in run.error
    assert run.progress_done is None
