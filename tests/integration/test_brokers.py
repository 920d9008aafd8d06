"""Redis and RabbitMQ alike: ``PUBLISH_TIMEOUT`` bounds every publish, and the dashboard
reads the depth of auditq's queue."""

import socket
import threading

import pytest
from django.urls import reverse

from auditq.delivery.broker import BrokerUnavailable, broker_connection, publish
from tests.celery_app import app as celery_app
from tests.conftest import QUEUE
from tests.integration.test_delivery import silent_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def raised_by(call) -> BaseException | None:
    """What ``call`` raised, run in a thread that must return: a functional bound, not a
    benchmark (``PUBLISH_TIMEOUT`` is 0.5 s in the tests; a hung publish never returns)."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            raised.append(None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the publish still waits for the broker"
    return raised[0]


def test_a_publish_to_a_broker_that_accepts_and_never_answers_gives_up(broker):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections in the kernel, never answers
    celery_app.conf.broker_url = silent_url(broker.kind, listener.getsockname()[1])
    try:
        error = raised_by(lambda: publish([1]))
    finally:
        listener.close()

    assert isinstance(error, BrokerUnavailable)


def test_a_publish_to_a_broker_that_stops_answering_gives_up(broker):
    """On RabbitMQ with publisher confirms (as the README recommends) a publish waits for
    the broker's acknowledgement: ``PUBLISH_TIMEOUT`` bounds that wait too."""
    sender = broker_connection(celery_app)
    try:
        publish([1], connection=sender)
        assert broker.depth(QUEUE) == 1
        broker.pause()
        try:
            error = raised_by(lambda: publish([2], connection=sender))
        finally:
            broker.pause(False)
    finally:
        sender.release()

    assert isinstance(error, BrokerUnavailable)


@pytest.fixture
def superuser(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return user


def test_the_dashboard_reads_the_queue_depth(broker, client, superuser):
    dashboard = reverse("admin:auditq_dashboard")
    publish([1])
    publish([2])

    queue = client.get(dashboard).context["queue"]

    assert (queue.queue, queue.messages, queue.status) == (QUEUE, 2, "ok")
    broker.drop(QUEUE)
    assert client.get(dashboard).context["queue"].messages == 0
