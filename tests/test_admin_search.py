"""The admin's search runs on indexes: the exact object key on every database, parts of
names through pg_trgm on PostgreSQL (migration 0003)."""

from importlib import import_module

import pytest
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
