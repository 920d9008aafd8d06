"""The admin and the hash chains: entries after a break are marked in the list and on
their page, and the dashboard shows the last verification and its result."""

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from auditq.chain import verify
from auditq.models import AuditEntry
from tests.test_admin_dashboard import figure
from tests.testapp.models import Chosen, Document

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:auditq_auditentry_changelist"


@pytest.fixture
def superuser(client, django_user_model) -> User:
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return user


def entries_of(model) -> list[AuditEntry]:
    content_type = ContentType.objects.get_for_model(model)
    return list(AuditEntry.objects.filter(content_type=content_type).order_by("id"))


@pytest.fixture
def broken() -> tuple[AuditEntry, AuditEntry, AuditEntry]:
    """Three Document entries, the second edited behind auditq's back, then verified."""
    for n in range(3):
        Document.objects.create(title=f"doc {n}")
    Chosen.objects.create(name="intact")
    first, second, third = entries_of(Document)
    AuditEntry.objects.filter(pk=second.pk).update(object_repr="forged")
    verify.verify()
    return first, second, third


def marked_rows(html: str) -> int:
    return html.count('class="auditq-broken"')


def test_the_list_marks_the_entries_at_and_after_a_break(client, superuser, broken):
    html = client.get(reverse(CHANGELIST)).content.decode()

    assert marked_rows(html) == 2  # the forged entry and the one after it
    assert f"broken at entry {broken[1].pk}" in html


def test_the_list_has_no_chain_column_while_every_chain_is_intact(client, superuser):
    Document.objects.create(title="fine")
    verify.verify()

    html = client.get(reverse(CHANGELIST)).content.decode()

    assert "column-chain_mark" not in html
    assert marked_rows(html) == 0


def test_the_list_reads_the_chains_once_a_page(client, superuser):
    Document.objects.create(title="fine")

    with CaptureQueriesContext(connection) as queries:
        client.get(reverse(CHANGELIST))

    assert len([q for q in queries if "auditq_auditchain" in q["sql"]]) == 1


def test_an_entry_page_says_whether_it_comes_after_a_break(client, superuser, broken):
    first, second, _ = broken

    def page(entry: AuditEntry) -> str:
        url = reverse("admin:auditq_auditentry_change", args=[entry.pk])
        return client.get(url).content.decode()

    assert (
        f"AFTER A BREAK: the last verification found this chain broken at entry {second.pk}"
        in page(second)
    )
    assert f"hash {first.chain_hash}" in page(first)
    assert "AFTER A BREAK" not in page(first)


def test_the_dashboard_shows_the_last_verification_and_its_result(client, superuser, broken):
    html = client.get(reverse("admin:auditq_dashboard")).content.decode()

    assert "auditq-alert" in figure(html, "verification")
    assert f"testapp.document broken at entry {broken[1].pk}" in html


def test_the_dashboard_shows_an_intact_trail(client, superuser):
    Document.objects.create(title="fine")
    verify.verify()

    html = client.get(reverse("admin:auditq_dashboard")).content.decode()

    assert "auditq-ok" in figure(html, "verification")
    assert "last checked" in html


def test_the_dashboard_says_when_the_trail_was_never_verified(client, superuser):
    html = client.get(reverse("admin:auditq_dashboard")).content.decode()

    assert "auditq-warn" in figure(html, "verification")
    assert "schedule auditq.tasks.verify" in html
