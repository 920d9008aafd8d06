"""The tests' operations. Each step leaves an ``Effect`` (handler ``"op:<step>"``), written
in the step's own transaction, so that a step that completed twice shows twice.

Module-level, imported from ``TestappConfig.ready()``: the worker processes of the
integration tests find the same operations by name.
"""

import os
import time
import uuid
from pathlib import Path

from auditq import Operation, retry_policy
from tests.testapp.models import Document, Effect


def effect(step, name: str, **seen) -> None:
    Effect.objects.create(
        handler=f"op:{name}",
        object_pk=str(step.run_id),
        event_id=uuid.uuid4(),
        pid=os.getpid(),
        seen={"attempt": step.attempt, **seen},
    )


def charge(step):
    effect(step, "charge", amount=step.get("amount"))
    step.set("charge_id", f"ch_{step.get('order')}")
    if step.get("amount") >= 100:
        step.jump_to("big")


def review(step):
    """The big-amount branch: jumps back to main, to the receipt (skipping ``pack``)."""
    effect(step, "review", charge_id=step.get("charge_id"))
    step.set("reviewed", True)
    step.jump_to("main", receipt)


def pack(step):
    effect(step, "pack")
    step.set("packed", True)


def receipt(step):
    effect(step, "receipt", charge_id=step.get("charge_id"), reviewed=step.get("reviewed", False))


orders = Operation("tests.orders", main=[charge, pack, receipt], big=[review])


def fail_until_allowed(step):
    """Fails until an ``Effect`` with handler ``"allow"`` names the run (the test writes
    one to let a retry through)."""
    effect(step, "flaky-try")
    if not Effect.objects.filter(handler="allow", object_pk=str(step.run_id)).exists():
        raise RuntimeError(f"declined for run {step.run_id}")
    effect(step, "flaky")


def first(step):
    effect(step, "first")
    step.set("token", f"t-{step.run_id}")


def second(step):
    effect(step, "second", token=step.get("token", None))


flaky = Operation("tests.flaky", main=[first, fail_until_allowed, second], retries=0)


def leak(step):
    """Quotes its masked argument and value in its error, as a careless step would."""
    step.set("client_secret", f"cs-{step.run_id}-hush")
    raise PermissionError(
        f"the gateway refused {step.get('api_token')} with {step.get('client_secret')} "
        f"for order {step.get('order')}"
    )


leaky = Operation("tests.leaky", main=[leak], retries=0)


@retry_policy(retries=2, backoff=0.05)
def retried(step):
    effect(step, "retried-try")
    if step.attempt < 3:
        raise ValueError(f"attempt {step.attempt}")
    effect(step, "retried")


retrying = Operation("tests.retrying", main=[first, retried], retries=0)


def wrong_branch(step):
    effect(step, "wrong-branch")
    step.jump_to("nowhere")


def wrong_step(step):
    step.jump_to("big", receipt)


broken = Operation("tests.broken", main=[wrong_branch], big=[review])
broken_step = Operation("tests.broken_step", main=[wrong_step], big=[review])


def slow(step):
    """Writes its effect, then waits ``seconds``; or, the first time where
    ``AUDITQ_TEST_STEP_STALL_FILE`` is set, creates that file and waits: until
    ``AUDITQ_TEST_STEP_RELEASE_FILE`` exists (the test cuts the worker's host off
    meanwhile), or for an hour (the test kills the worker)."""
    effect(step, "slow")
    stall = os.environ.get("AUDITQ_TEST_STEP_STALL_FILE")
    if stall and not Path(stall).exists():
        Path(stall).touch()
        release = os.environ.get("AUDITQ_TEST_STEP_RELEASE_FILE")
        if release is None:
            time.sleep(3600)
        while release is not None and not Path(release).exists():
            time.sleep(0.05)
    time.sleep(step.get("seconds", 0))


slow_going = Operation("tests.slow", main=[first, slow, second], lease=2.0, retries=2, backoff=0.1)
slow_first = Operation("tests.slow_first", main=[slow, second], lease=60.0)


def title_first(step):
    """An audited change in a step."""
    document = Document.objects.get(pk=step.get("document_id"))
    document.title = "first step"
    document.save()


def title_second(step):
    document = Document.objects.get(pk=step.get("document_id"))
    document.title = "second step"
    document.save()


retitling = Operation("tests.retitling", main=[title_first, title_second])


def count_up(step):
    """Counts to ``upto`` in chunks of ``chunk``, re-entering itself: a long step reporting
    its progress as it goes."""
    done = min(step.get("done", 0) + step.get("chunk"), step.get("upto"))
    effect(step, "count", done=done)
    step.set("done", done)
    step.progress(done, step.get("upto") if done == step.get("chunk") else None)
    if done < step.get("upto"):
        step.jump_to(step.branch, count_up)


counting = Operation("tests.counting", main=[count_up])


def bad_progress(step):
    step.progress(step.get("done"), step.get("total"))


misreporting = Operation("tests.misreporting", main=[bad_progress], retries=0)
