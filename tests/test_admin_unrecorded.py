"""The trail's banner: with changes waiting and no worker alive, the entry list says that
newer changes are missing from it, at the cost of one outbox probe when nothing waits."""

import datetime
from urllib.parse import urlencode

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from auditq.admin import figures
from auditq.admin.filters import ModelFilter, ObjectFilter
from auditq.delivery import heartbeat
from auditq.models import Outbox
from tests.helpers import entry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:auditq_auditentry_changelist"
BANNER = "Changes are waiting to be recorded"


@pytest.fixture
def superuser(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return user


def trail_of(document: Document) -> str:
    query = {
        ModelFilter.parameter_name: ContentType.objects.get_for_model(Document).pk,
        ObjectFilter.parameter_name: str(document.pk),
    }
    return f"{reverse(CHANGELIST)}?{urlencode(query)}"


def test_no_banner_while_nothing_waits(client, superuser):
    document = Document.objects.create(title="doc")
    entry(document)

    assert BANNER not in client.get(reverse(CHANGELIST)).content.decode()
    assert BANNER not in client.get(trail_of(document)).content.decode()


def test_a_banner_on_the_list_and_the_trail_while_changes_wait_and_no_worker_lives(
    client, superuser
):
    document = Document.objects.create(title="doc")
    entry(document)
    Outbox.objects.create(payload="{}", created_at=timezone.now() - datetime.timedelta(minutes=3))

    for url in (reverse(CHANGELIST), trail_of(document)):
        response = client.get(url)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 1  # the trail is filtered
        html = " ".join(response.content.decode().split())
        assert f"{BANNER} (the oldest for 3 min" in html, url
        assert "no worker has been heard from lately" in html
        assert reverse("admin:auditq_dashboard") in html


def test_no_banner_while_a_worker_is_alive(client, superuser):
    Outbox.objects.create(payload="{}")
    heartbeat.beat("w1@host")

    assert BANNER not in client.get(reverse(CHANGELIST)).content.decode()


def test_the_banner_costs_one_outbox_probe_and_no_count():
    with CaptureQueriesContext(connection) as nothing_waits:
        assert figures.unrecorded() is None
    Outbox.objects.create(payload="{}")
    heartbeat.beat("w1@host")
    with CaptureQueriesContext(connection) as a_worker_lives:
        assert figures.unrecorded() is None

    assert len(nothing_waits) == 1
    assert len(a_worker_lives) == 2  # the outbox probe, then the heartbeats
    for query in [*nothing_waits, *a_worker_lives]:
        assert "COUNT(" not in query["sql"].upper()
