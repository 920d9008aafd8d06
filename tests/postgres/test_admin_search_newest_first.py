"""A search's page on a partitioned trail comes from the newest partition alone when that
partition holds the whole page; otherwise it is read from every partition, as usual."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from auditq import partitions
from auditq.admin import AuditEntryAdmin
from tests.helpers import entry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:auditq_auditentry_changelist"


@pytest.fixture
def partitioned(settings, monkeypatch):
    settings.AUDITQ = {**getattr(settings, "AUDITQ", {}), "PARTITION": "month"}
    partitions.convert("month")
    partitions.create("month", timezone.now() - datetime.timedelta(days=70), timezone.now())
    monkeypatch.setattr(AuditEntryAdmin, "list_per_page", 3)


def invoices(*days_ago: int) -> None:
    """One entry per number, named after it, changed that many days ago."""
    for n, days in enumerate(days_ago):
        at = timezone.now() - datetime.timedelta(days=days, seconds=n)
        entry(Document(pk=n + 1), object_repr=f"Invoice {n + 1}", at=at)


def search_page(admin_client, term: str) -> tuple[list[str], list[str]]:
    """The page's names, and the page queries (the ones ordered newest first) it ran."""
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(CHANGELIST), {"q": term})
    assert response.status_code == 200
    names = [e.object_repr for e in response.context["cl"].result_list]
    pages = [q["sql"] for q in queries if "ORDER BY COALESCE" in q["sql"]]
    return names, pages


def test_a_page_the_newest_partition_holds_is_read_from_it_alone(admin_client, partitioned):
    invoices(0, 0, 0, 0, 40, 40, 40)

    names, pages = search_page(admin_client, "invoice")

    assert names == ["Invoice 1", "Invoice 2", "Invoice 3"]
    [page] = pages
    month = partitions.period_start("month", timezone.now())
    assert '"auditq_auditentry"."occurred_at" >=' in page
    assert month.strftime("%Y-%m-%d") in page


def test_a_page_beyond_the_newest_partition_is_read_from_every_one(admin_client, partitioned):
    invoices(0, 40, 41, 42, 43)

    names, pages = search_page(admin_client, "invoice")

    assert names == ["Invoice 1", "Invoice 2", "Invoice 3"]
    narrowed, whole = pages
    assert '"occurred_at" >=' in narrowed
    assert '"occurred_at" >=' not in whole


def test_a_column_sort_is_read_as_usual(admin_client, partitioned):
    invoices(0, 0, 0, 0, 40)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(CHANGELIST), {"q": "invoice", "o": "1"})

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 3
    assert not [q for q in queries if '"occurred_at" >=' in q["sql"]]
