"""The example project's flow: conversion flags and email counters kept by handlers."""

import json
from decimal import Decimal

import pytest

from auditq.models import AuditEntry, CallbackRun
from example_project.fundraising.models import Donation, Donor, Email, EmailEvent, Fundraiser
from example_project.fundraising.report import rows

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK = "/webhooks/email-events/"


@pytest.fixture
def email() -> Email:
    donor = Donor.objects.create(name="Ada", email="ada@example.org")
    fundraiser = Fundraiser.objects.create(name="Library Roof")
    return Email.objects.create(donor=donor, fundraiser=fundraiser, subject="Help us")


def donate(email: Email, *, via_email: bool = True, **fields) -> Donation:
    return Donation.objects.create(
        amount=Decimal("25.00"),
        donor=email.donor,
        fundraiser=email.fundraiser,
        email=email if via_email else None,
        **fields,
    )


def test_a_succeeded_donation_marks_its_email_donated_and_a_refund_undoes_it(email):
    donation = donate(email)
    email.refresh_from_db()
    assert not email.donated  # pending: the handler was not even asked to run

    donation.status = Donation.Status.SUCCEEDED
    donation.save()
    email.refresh_from_db()
    assert email.donated

    donation.status = Donation.Status.REFUNDED
    donation.save()
    email.refresh_from_db()
    assert not email.donated
    flags = [e.changes["donated"] for e in AuditEntry.objects.for_object(email)[1:]]
    assert flags == [[False, True], [True, False]]


def test_a_donation_without_an_email_finds_it_by_donor_and_fundraiser(email):
    donate(email, via_email=False, status=Donation.Status.SUCCEEDED)

    email.refresh_from_db()
    assert email.donated


def test_the_handler_gives_the_same_result_whatever_order_its_runs_arrive_in(email):
    from auditq.consumers import callbacks

    donation = donate(email, status=Donation.Status.SUCCEEDED)
    donation.status = Donation.Status.REFUNDED
    donation.save()
    first, _newer = CallbackRun.objects.order_by("id")
    # Run the older change's handler again, after the newer one: still not donated.
    CallbackRun.objects.filter(pk=first.pk).update(status="pending")
    callbacks.run(first.pk, "default")
    email.refresh_from_db()
    assert not email.donated


def test_the_webhook_counts_opens_and_clicks_in_a_worker(client, email):
    batch = [
        {"email_id": email.pk, "event": "open"},
        {"email_id": email.pk, "event": "open"},
        {"email_id": email.pk, "event": "click"},
    ]
    response = client.post(WEBHOOK, json.dumps(batch), content_type="application/json")

    assert (response.status_code, response.json()) == (202, {"accepted": 3})
    email.refresh_from_db()
    assert (email.opens, email.clicks) == (2, 1)
    [report] = rows()
    assert (report.emails_sent, report.email_opens, report.email_clicks) == (1, 2, 1)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{not json", "the body is not JSON we can read"),
        ("[]", "expected a non-empty JSON list of events"),
        ('{"email_id": 1}', "expected a non-empty JSON list of events"),
        ('[{"email_id": "1", "event": "open"}]', "email_id must be an integer"),
        ('[{"email_id": 1, "event": "bounce"}]', "unknown event 'bounce'"),
        ('[{"email_id": 1, "event": "open", "x": 1}]', "event 0: expected"),
        ("[" * 100_000 + "]" * 100_000, "the body is not JSON we can read"),  # too deep
        ("[" + "9" * 5000 + "]", "the body is not JSON we can read"),  # 5,000 digits
        ('[{"email_id": 1, "event": []}]', "unknown event []"),  # unhashable
        ('[{"email_id": 1, "event": {}}]', "unknown event {}"),
        (f'[{{"email_id": {2**70}, "event": "open"}}]', "email_id must be from 1 to"),
        ('[{"email_id": 0, "event": "open"}]', "email_id must be from 1 to"),
    ],
)
def test_bad_batches_get_a_400_with_a_clear_body(client, email, body, error):
    response = client.post(WEBHOOK, body, content_type="application/json")

    assert response.status_code == 400
    assert error in response.json()["error"]
    assert not EmailEvent.objects.exists()


def test_an_unknown_email_refuses_the_whole_batch(client, email):
    batch = [{"email_id": email.pk, "event": "open"}, {"email_id": 999999, "event": "click"}]
    response = client.post(WEBHOOK, json.dumps(batch), content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"error": "unknown email_id: 999999", "accepted": 0}
    assert not EmailEvent.objects.exists()
    email.refresh_from_db()
    assert (email.opens, email.clicks) == (0, 0)


def test_the_webhook_takes_posts_only(client):
    assert client.get(WEBHOOK).status_code == 405


def test_the_debug_page_hides_the_broker_and_redis_passwords(settings, rf):
    from example_project import settings as example

    password = "hunter" + "2"  # spelled apart: the page quotes source lines around frames
    url = f"redis://:{password}@redis.internal:6379/0"
    settings.DEBUG = True
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = example.DEFAULT_EXCEPTION_REPORTER_FILTER
    settings.CELERY_BROKER_URL = settings.REDIS_URL = url

    page = error_page(rf.post(WEBHOOK, REDIS_URL=url, DATABASE_URL=f"postgres://u:{password}@db/x"))

    assert "CELERY_BROKER_URL" in page and "REDIS_URL" in page and "DATABASE_URL" in page
    assert password not in page


def error_page(request) -> str:
    """Django's debug page for an error raised while serving ``request``."""
    import sys

    from django.views.debug import technical_500_response

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()
