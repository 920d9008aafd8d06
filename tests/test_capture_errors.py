"""A capture error never fails the user's save: it is logged, and the change is recorded
for the consumers that could capture it."""

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.db import transaction

from auditq import after_save, registry
from auditq.models import CallbackRun
from tests.helpers import trail
from tests.testapp.models import Document, Player, Team

pytestmark = pytest.mark.django_db(transaction=True)


class Clumsy:
    """A consumer of Documents whose capture does what the test says."""

    name = "clumsy"

    def __init__(self, capture: Callable) -> None:
        self._capture = capture
        self.received: list = []

    def models(self):
        return [Document]

    def capture(self, model, instance, action, changes, context, loaded):
        return self._capture(instance)

    def record(self, events, using):
        self.received.extend(events)


@pytest.fixture
def clumsy() -> Iterator[Callable[[Callable], Clumsy]]:
    def register(capture: Callable) -> Clumsy:
        consumer = Clumsy(capture)
        registry.add_consumer(consumer)
        return consumer

    yield register
    registry.remove_consumer(Clumsy.name)


def test_a_consumer_that_cannot_capture_never_fails_the_save(clumsy, caplog):
    clumsy(lambda instance: 1 / 0)

    document = Document.objects.create(title="saved anyway")
    with transaction.atomic():
        document.title = "again"
        document.save()
    pk = document.pk
    document.delete()

    assert [e.action for e in trail(Document(pk=pk))] == ["create", "update", "delete"]
    assert caplog.text.count("ZeroDivisionError") == 3
    assert "the clumsy consumer could not capture the create of testapp.document" in caplog.text


def test_capture_data_that_is_not_json_is_encoded_not_raised(clumsy):
    consumer = clumsy(lambda instance: {"price": Decimal("1.50"), "thing": object})

    Document.objects.create(title="alone")  # its own statement writes the row (PostgreSQL)
    with transaction.atomic():
        Document.objects.create(title="in a transaction")  # the commit hook writes it

    assert [e.consumers["clumsy"]["price"] for e in consumer.received] == ["1.50", "1.50"]
    assert consumer.received[0].consumers["clumsy"]["thing"]["unencodable"] is True


def noted(document, event):
    raise AssertionError("must not run")


def test_a_when_that_raises_skips_its_handler_not_the_save(caplog):
    after_save(Document, when=lambda document: document.no_such_field)(noted)
    try:
        document = Document.objects.create(title="when raised")
    finally:
        registry.remove_handler(f"{noted.__module__}.{noted.__qualname__}")

    assert [e.action for e in trail(document)] == ["create"]
    assert not CallbackRun.objects.exists()
    assert "the callbacks consumer could not capture the create" in caplog.text
    assert "AttributeError" in caplog.text


def test_a_sum_of_no_number_is_logged_and_the_counts_go_on(caplog):
    team = Team.objects.create(name="red")
    player = Player.objects.create(name="a", team=team, points=Decimal("1.00"))
    # A value Django would refuse at the next save, left on the instance by code that
    # saves only other fields: the counters cannot add it up, the save goes on.
    player.points = "lots"
    player.name = "b"
    player.save(update_fields=["name"])

    assert Player.objects.get().name == "b"
    assert "the counters consumer could not capture the update" in caplog.text
    assert "ValidationError" in caplog.text
