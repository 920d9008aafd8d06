"""The admin's text search on PostgreSQL: pg_trgm indexes, and a migration that copes
without the right to create the extension."""

import os

import pytest
from django.apps import apps
from django.db import connection

from tests.test_admin_search import (  # noqa: F401  (the fixture applies here too)
    TRIGRAM,
    _plans_show_usable_indexes,
    indexes,
    migration,
    searched,
)

pytestmark = pytest.mark.django_db


def test_the_whole_search_runs_on_indexes_on_postgresql():
    plan = searched("report").order_by().explain()

    for index in ("auditq_entry_key", *TRIGRAM):
        assert index in plan, plan
    assert "Seq Scan" not in plan


def test_without_the_right_to_create_pg_trgm_the_migration_warns_and_goes_on(caplog):
    role = f"auditq_no_create_{os.getpid()}"
    with connection.cursor() as cursor:  # all undone when the test's transaction rolls back
        cursor.execute("DROP EXTENSION pg_trgm CASCADE")  # and with it the two indexes
        cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(f"SET ROLE {role}")
        with connection.schema_editor() as editor:
            migration.create_trigram_indexes(apps, editor)
        cursor.execute("RESET ROLE")

    assert "could not create the pg_trgm extension" in caplog.text
    assert not set(TRIGRAM) & indexes()

    with connection.schema_editor() as editor:  # a user who may: both indexes, again
        migration.create_trigram_indexes(apps, editor)
    assert set(TRIGRAM) <= indexes()
