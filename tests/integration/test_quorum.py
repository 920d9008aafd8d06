"""RabbitMQ with auditq's queue a quorum queue, as the README recommends: changes,
callbacks and counter caches (whose flush is sent with a countdown) are all delivered."""

import subprocess

import pytest

from auditq.models import CounterDelta, Outbox
from tests.conftest import QUEUE, wait_for
from tests.integration.test_delivery import settle
from tests.testapp.models import Document, Effect, Player, Team, Ticket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def queue_type(broker) -> str:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", broker.vhost, "name", "type"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("\t") for line in listed.splitlines() if "\t" in line).get(QUEUE, "")


@pytest.mark.parametrize("broker", ["amqp"], indirect=True)
def test_a_quorum_queue_delivers_changes_callbacks_and_counters(broker, workers):
    workers(AUDITQ_TEST_QUORUM="1")
    assert queue_type(broker) == "quorum"

    team = Team.objects.create(name="reds")
    for number in range(3):
        Player.objects.create(team=team, name=f"p{number}", active=True, points=2)
    ticket = Ticket.objects.create(subject="billing", state="closed")
    document = Document.objects.create(title="on a quorum queue")

    [entry] = settle(1, timeout=60, workers=workers)
    assert entry.object_pk == str(document.pk)
    effect = wait_for(lambda: Effect.objects.filter(handler="closed").first(), 60, "the handler")
    assert effect.object_pk == str(ticket.pk)
    wait_for(
        lambda: not CounterDelta.objects.exists() and not Outbox.objects.exists(),
        60,
        "the counter flush, sent with a countdown",
    )
    team.refresh_from_db()
    assert (team.players_count, team.active_count) == (3, 3)
