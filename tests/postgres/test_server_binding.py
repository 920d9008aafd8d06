"""psycopg's server-side binding (``OPTIONS: {"server_side_binding": True}``) prepares
every statement, and a prepared statement holds one command: the outbox row and the
``COMMIT`` then travel apart, and every change still commits with its row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.helpers import only_entry, trail
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server_side_binding() -> Iterator[None]:
    assert connection.vendor == "postgresql", "tests/postgres runs only in the PostgreSQL pass"
    options = connection.settings_dict["OPTIONS"]
    connection.close()
    options["server_side_binding"] = True
    connection.features.__dict__.pop("uses_server_side_binding", None)
    try:
        assert connection.features.uses_server_side_binding
        yield
    finally:
        connection.close()
        del options["server_side_binding"]
        connection.features.__dict__.pop("uses_server_side_binding", None)


def test_a_transaction_commits_with_its_outbox_row(server_side_binding):
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        first = Document.objects.create(title="bound")
        second = Document.objects.create(title="bound too")

    assert [e.action for e in trail(first)] == [e.action for e in trail(second)] == ["create"]
    logged = [q["sql"] for q in queries.captured_queries]
    assert all(isinstance(sql, str) for sql in logged), logged
    assert not any("; COMMIT" in sql for sql in logged), logged


def test_lone_saves_and_deletes_are_recorded(server_side_binding):
    document = Document.objects.create(title="alone")
    document.title = "still alone"
    document.save()
    pk = document.pk
    document.delete()

    assert [e.action for e in trail(Document(pk=pk))] == ["create", "update", "delete"]
    assert only_entry(Document(pk=pk), "update").changes == {"title": ["alone", "still alone"]}
