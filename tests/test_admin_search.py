"""The admin's search runs on indexes: the exact object key on every database, parts of
names through pg_trgm on PostgreSQL (migration 0003)."""

import html
import re
from datetime import timedelta
from importlib import import_module

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from auditq.admin import AuditEntryAdmin
from auditq.admin.paginators import SearchResultsPaginator
from auditq.models import AuditEntry
from tests.helpers import entry
from tests.testapp.models import Document

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


CHANGELIST = "admin:auditq_auditentry_changelist"


def listed(client, **params) -> set[str]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200, response
    return {e.object_repr for e in response.context["cl"].result_list}


@pytest.fixture
def old_and_new():
    """An invoice changed today and one changed 200 days ago."""
    entry(Document(pk=1), object_repr="Invoice 1 (today)")
    entry(
        Document(pk=2), object_repr="Invoice 2 (in March)", at=timezone.now() - timedelta(days=200)
    )


def test_a_small_trail_is_searched_over_all_time(admin_client, old_and_new):
    assert listed(admin_client, q="invoice") == {"Invoice 1 (today)", "Invoice 2 (in March)"}


def test_a_big_trail_is_searched_over_the_last_days_with_all_time_a_click_away(
    admin_client, settings, old_and_new
):
    settings.AUDITQ = {"ADMIN_SEARCH_DAYS": 90, "ADMIN_SEARCH_DAYS_ABOVE": 0}

    response = admin_client.get(reverse(CHANGELIST), {"q": "invoice"})

    assert {e.object_repr for e in response.context["cl"].result_list} == {"Invoice 1 (today)"}
    page = response.content.decode()
    since = (timezone.now() - timedelta(days=90)).strftime("%-d %b %Y")
    assert f"in the entries since {since}" in page
    all_time = re.search(r'href="([^"]*)" id="auditq-search-all"', page)
    assert all_time, page
    found = admin_client.get(reverse(CHANGELIST) + html.unescape(all_time.group(1)))
    assert {e.object_repr for e in found.context["cl"].result_list} == {
        "Invoice 1 (today)",
        "Invoice 2 (in March)",
    }
    assert "auditq-search-all" not in found.content.decode()


def test_a_chosen_period_or_no_search_is_not_narrowed(admin_client, settings, old_and_new):
    settings.AUDITQ = {"ADMIN_SEARCH_DAYS": 90, "ADMIN_SEARCH_DAYS_ABOVE": 0}
    a_year_ago = (timezone.now() - timedelta(days=365)).isoformat()

    assert listed(admin_client, q="invoice", occurred_at__gte=a_year_ago) == {
        "Invoice 1 (today)",
        "Invoice 2 (in March)",
    }
    assert listed(admin_client) == {"Invoice 1 (today)", "Invoice 2 (in March)"}


def test_no_window_when_the_setting_is_none(admin_client, settings, old_and_new):
    settings.AUDITQ = {"ADMIN_SEARCH_DAYS": None, "ADMIN_SEARCH_DAYS_ABOVE": 0}

    assert listed(admin_client, q="invoice") == {"Invoice 1 (today)", "Invoice 2 (in March)"}


def test_a_bad_searched_value_answers_like_djangos_own_filters(admin_client, settings):
    settings.AUDITQ = {"ADMIN_SEARCH_DAYS_ABOVE": 0}

    response = admin_client.get(reverse(CHANGELIST), {"q": "x", "searched": "forever"})

    assert response.status_code == 302
    assert response.url.endswith("?e=1")


def test_search_results_are_newest_first_from_the_search_indexes(admin_client):
    for days in (3, 1, 2):
        entry(Document(pk=days), object_repr=f"Report {days}", at=timezone.now() - timedelta(days))

    with CaptureQueriesContext(connection) as queries:
        names = [e.object_repr for e in page(admin_client, q="report").result_list]

    assert names == ["Report 1", "Report 2", "Report 3"]
    # Ordered by an expression no index serves: PostgreSQL reads the trigram indexes
    # instead of walking the time index through every row for a rare term.
    assert [q for q in queries if "ORDER BY COALESCE" in q["sql"]]


def test_search_results_sorted_by_time_keep_off_the_time_index(admin_client):
    for days in (3, 1, 2):
        entry(Document(pk=days), object_repr=f"Report {days}", at=timezone.now() - timedelta(days))

    with CaptureQueriesContext(connection) as queries:
        oldest_first = page(admin_client, q="report", o="1").result_list  # the time column
        names = [e.object_repr for e in oldest_first]

    assert names == ["Report 3", "Report 2", "Report 1"]
    searches = [q["sql"] for q in queries if "LIKE" in q["sql"]]
    orders = [sql.split("ORDER BY ")[1] for sql in searches if "ORDER BY" in sql]
    assert [o for o in orders if o.startswith("COALESCE")]
    assert not [o for o in orders if o.startswith('"auditq_auditentry"."occurred_at"')]


def test_a_search_counts_its_results_up_to_a_cap(admin_client, monkeypatch):
    monkeypatch.setattr(SearchResultsPaginator, "CAP", 2)
    for pk in (1, 2, 3):
        entry(Document(pk=pk), object_repr=f"Report {pk}")

    searched = page(admin_client, q="report")
    listed = page(admin_client)

    assert (searched.paginator.approximate, searched.result_count) == ("more than", 2)
    assert (listed.paginator.approximate, listed.result_count) == ("", 3)


def test_the_action_checkbox_is_djangos(admin_client):
    found = entry(Document(pk=7), object_repr="Report")
    model_admin = AuditEntryAdmin(AuditEntry, admin.site)

    ours = model_admin.action_checkbox(found)

    assert ours == admin.ModelAdmin.action_checkbox(model_admin, found)
    assert ours in admin_client.get(reverse(CHANGELIST)).content.decode()


def page(client, **params):
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return response.context["cl"]
