"""The request's user, address and id reach the audit trail, in sync and async views."""

import pytest
from asgiref.sync import async_to_sync

from auditq.models import AuditEntry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def document():
    return Document.objects.create(title="before")


@pytest.fixture
def user(django_user_model, client, async_client):
    user = django_user_model.objects.create(username="ada")
    client.force_login(user)
    async_client.force_login(user)
    return user


def last_entry(document):
    return AuditEntry.objects.for_object(document).last()


def test_actor_address_and_request_id_come_from_the_request(client, user, document):
    response = client.post(
        f"/documents/{document.pk}/title/",
        {"title": "after"},
        REMOTE_ADDR="203.0.113.9",
        HTTP_X_REQUEST_ID="req-42.a_b",
    )

    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-42.a_b"
    entry = last_entry(document)
    assert entry.changes == {"title": ["before", "after"]}
    assert (entry.actor_id, entry.actor_repr) == (user.pk, "ada")
    assert entry.remote_addr == "203.0.113.9"
    assert entry.request_id == "req-42.a_b"


def test_an_async_view_is_audited_with_its_request(async_client, user, document):
    response = async_to_sync(async_client.post)(
        f"/documents/{document.pk}/title-async/",
        {"title": "async"},
        headers={"X-Request-ID": "async-1"},
    )

    assert response.status_code == 200
    entry = last_entry(document)
    assert entry.changes == {"title": ["before", "async"]}
    assert (entry.actor_id, entry.request_id) == (user.pk, "async-1")
    assert entry.remote_addr == "127.0.0.1"


def test_an_anonymous_request_has_no_actor(client, document):
    client.post(f"/documents/{document.pk}/title/", {"title": "anon"})

    entry = last_entry(document)
    assert (entry.actor_id, entry.actor_repr) == (None, "")


@pytest.mark.parametrize("given", ["", "x" * 201, "has space", "semi;colon", "ünïcode"])
def test_an_insane_request_id_is_replaced_by_a_new_uuid(client, document, given):
    client.post(f"/documents/{document.pk}/title/", {"title": "x"}, HTTP_X_REQUEST_ID=given)

    request_id = last_entry(document).request_id
    assert request_id != given
    assert len(request_id) == 32
    int(request_id, 16)


def test_a_spoofed_forwarded_for_is_ignored_without_trusted_proxies(client, document):
    client.post(
        f"/documents/{document.pk}/title/",
        {"title": "x"},
        REMOTE_ADDR="198.51.100.7",
        HTTP_X_FORWARDED_FOR="1.2.3.4",
    )

    assert last_entry(document).remote_addr == "198.51.100.7"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4, 10.0.0.7", "1.2.3.4"),
        # The client forged the leftmost hop: the rightmost untrusted address wins.
        ("6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),
        ("not-an-ip, 10.0.0.7", "10.0.0.7"),
        ("", "10.0.0.5"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    client, document, settings, forwarded, expected
):
    settings.AUDITQ = {**settings.AUDITQ, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    client.post(
        f"/documents/{document.pk}/title/",
        {"title": "x"},
        REMOTE_ADDR="10.0.0.5",
        HTTP_X_FORWARDED_FOR=forwarded,
    )

    assert last_entry(document).remote_addr == expected
