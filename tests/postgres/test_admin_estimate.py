"""The admin changelist on PostgreSQL: the unfiltered count is the planner's estimate (on a
partitioned trail, the sum of its partitions')."""

import datetime

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from auditq import admin as auditq_admin
from auditq import partitions
from tests.helpers import entry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:auditq_auditentry_changelist"


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw")


def test_unfiltered_changelist_uses_postgresql_estimate(client, superuser, monkeypatch):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    for _ in range(5):
        entry(document)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE auditq_auditentry")
    monkeypatch.setattr(auditq_admin.CappedCountPaginator, "CAP", 2)

    response = client.get(reverse(CHANGELIST))

    assert response.context["cl"].paginator.approximate == "about"
    assert response.context["cl"].result_count == 5


def test_a_partitioned_trail_is_estimated_from_its_partitions(client, superuser, monkeypatch):
    client.force_login(superuser)
    document = Document.objects.create(title="doc")
    partitions.convert("month")
    partitions.create("month", timezone.now() - datetime.timedelta(days=70), timezone.now())
    for days in (0, 0, 35, 35, 65, 65, 65):
        entry(document, at=timezone.now() - datetime.timedelta(days=days))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE auditq_auditentry")  # the parent: every partition too
    monkeypatch.setattr(auditq_admin.CappedCountPaginator, "CAP", 2)

    response = client.get(reverse(CHANGELIST))

    assert response.context["cl"].paginator.approximate == "about"
    assert response.context["cl"].result_count == 7
