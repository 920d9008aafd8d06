"""A key the database draws itself reaches the trail, whatever its type.

A lone ``save()`` writes its outbox row in its own ``INSERT``, before the key exists on
the Python side: the row keeps the key beside the payload and the worker puts it in.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction

from auditq.models import Outbox
from tests.helpers import only_entry
from tests.pgapp.models import PgServerKeyed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _on_postgresql() -> None:
    assert connection.vendor == "postgresql", "tests/postgres runs only in the PostgreSQL pass"


def test_a_key_drawn_by_the_database_is_the_entrys_key(undelivered):
    row = PgServerKeyed.objects.create(name="drawn")

    [outbox] = Outbox.objects.all()
    assert outbox.key == str(row.pk)  # kept beside the payload, as text
    [event] = outbox.events
    assert isinstance(row.pk, uuid.UUID)
    assert event.pk == str(row.pk)
    assert event.changes["id"] == [None, str(row.pk)]
    assert event.repr == f"drawn ({row.pk})"


def test_the_worker_records_it():
    row = PgServerKeyed.objects.create(name="drawn")

    entry = only_entry(row, "create")
    assert entry.object_pk == str(row.pk)
    assert entry.changes == {"id": [None, str(row.pk)], "name": [None, "drawn"]}
    assert entry.object_repr == f"drawn ({row.pk})"


def test_inside_a_transaction_the_key_is_known_at_commit(undelivered):
    with transaction.atomic():
        row = PgServerKeyed.objects.create(name="in a block")

    [outbox] = Outbox.objects.all()
    assert outbox.key == ""
    [event] = outbox.events
    assert event.pk == str(row.pk)
