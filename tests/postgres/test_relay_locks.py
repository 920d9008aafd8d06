"""The relay publishes only rows it no longer locks, so a fast worker never skips one."""

import threading

import pytest
from django.db import connection, transaction

from auditq.delivery import broker, relay
from auditq.models import Outbox
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def lockable_from_another_connection(outbox_ids) -> bool:
    """What a worker does on receipt: lock the row (here without waiting)."""
    result = []

    def try_lock():
        try:
            with transaction.atomic():
                rows = Outbox.objects.select_for_update(nowait=True).filter(id__in=outbox_ids)
                result.append(len(list(rows)) == len(outbox_ids))
        except Exception as exc:
            result.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
    return result[0]


def test_rows_are_unlocked_when_the_relay_publishes_them(undelivered, monkeypatch):
    Document.objects.create(title="left behind")
    seen = []

    def check(outbox_ids, using="default", app=None, connection=None):
        seen.append(lockable_from_another_connection(outbox_ids))

    monkeypatch.setattr(broker, "publish", check)
    assert relay.relay(fresh=True) == 1

    assert seen == [True]
