"""The relay: committed rows become messages; a failed publish leaves them due at once."""

import pytest
from django.db import transaction

from auditq import relay
from auditq.models import Outbox
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(undelivered, monkeypatch, settings):
    """Record what the relay would publish instead of publishing it."""
    messages = []

    def publish(outbox_ids, using="default", app=None, connection=None):
        messages.append(list(outbox_ids))

    monkeypatch.setattr(relay, "publish", publish)
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
        raise relay.BrokerUnavailable("ConnectionError: refused")

    with transaction.atomic():
        Document.objects.create(title="a")
    Document.objects.create(title="b")
    monkeypatch.setattr(relay, "publish", broken)

    with pytest.raises(relay.BrokerUnavailable):
        relay.relay(fresh=True)

    assert list(Outbox.objects.values_list("relayed_at", flat=True)) == [None, None]
    monkeypatch.undo()
    sent = []
    monkeypatch.setattr(relay, "publish", lambda ids, *args, **kwargs: sent.append(ids))
    assert relay.relay(fresh=True) == 2


def test_backlog_counts_rows_and_dates_the_oldest(undelivered):
    assert relay.backlog() == (0, None)
    Document.objects.create(title="a")
    Document.objects.create(title="b")

    count, oldest = relay.backlog()
    assert count == 2
    assert oldest == Outbox.objects.order_by("id").first().created_at
