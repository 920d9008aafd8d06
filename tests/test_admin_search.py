"""The admin's search runs on indexes: the exact object key on every database, parts of
names through pg_trgm on PostgreSQL (migration 0003)."""

import os
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection

from auditq.admin import AuditEntryAdmin
from auditq.models import AuditEntry

pytestmark = pytest.mark.django_db

migration = import_module("auditq.migrations.0003_entry_search_indexes")
TRIGRAM = tuple(migration.TRIGRAM_INDEXES)


@pytest.fixture(autouse=True)
def _plans_show_usable_indexes() -> None:
    """The test table is nearly empty: make PostgreSQL show which index it could use."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("pg_trgm indexes exist on PostgreSQL only")


def indexes() -> set[str]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, AuditEntry._meta.db_table)
    return {name for name, info in found.items() if info["index"]}


def searched(term: str):
    model_admin = AuditEntryAdmin(AuditEntry, admin.site)
    queryset, _ = model_admin.get_search_results(None, AuditEntry.objects.all(), term)
    return queryset


def test_the_exact_object_key_search_has_an_index():
    assert "auditq_entry_key" in indexes()
    assert "auditq_entry_key" in AuditEntry.objects.filter(object_pk="12").explain()


def test_the_trigram_indexes_are_for_postgresql_only():
    assert bool(set(TRIGRAM) & indexes()) == (connection.vendor == "postgresql")


def test_the_whole_search_runs_on_indexes_on_postgresql(postgres):
    plan = searched("report").order_by().explain()

    for index in ("auditq_entry_key", *TRIGRAM):
        assert index in plan, plan
    assert "Seq Scan" not in plan


def test_without_the_right_to_create_pg_trgm_the_migration_warns_and_goes_on(postgres, caplog):
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
