"""The example's donation receipt operation: charge, record, a call for big gifts, receipt."""

from decimal import Decimal

import pytest

from auditq.models import AuditEntry, OperationRun
from example_project.fundraising.models import Donation, Donor, Fundraiser
from example_project.fundraising.operations import donation_receipt

pytestmark = pytest.mark.django_db(transaction=True)


def donation(amount: str, card_token: str = "tok_visa") -> Donation:
    donor = Donor.objects.create(name="Ada", email="ada@example.org")
    fundraiser = Fundraiser.objects.create(name="Library Roof")
    return Donation.objects.create(
        amount=Decimal(amount), donor=donor, fundraiser=fundraiser, card_token=card_token
    )


def path(run: OperationRun) -> list[str]:
    return [s.step.rsplit(".", 1)[1] for s in run.steps.filter(status="succeeded").order_by("id")]


def test_a_small_gift_is_charged_recorded_and_receipted():
    gift = donation("25.00")

    run = donation_receipt.start(donation_id=gift.pk, key=f"donation-{gift.pk}")

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert path(run) == ["charge_card", "record_donation", "send_receipt"]
    assert run.values == {"payment_id": f"pay_{run.pk}", "receipt_sent_to": "ada@example.org"}
    gift.refresh_from_db()
    assert gift.status == Donation.Status.SUCCEEDED
    [entry] = AuditEntry.objects.for_object(gift).filter(action="update")
    assert entry.context["via_operation"] == f"fundraising.donation_receipt #{run.pk}"


def test_a_major_gift_gets_a_thank_you_call_then_its_receipt():
    gift = donation("500.00")

    run = donation_receipt.start(donation_id=gift.pk)

    run.refresh_from_db()
    assert path(run) == [
        "charge_card",
        "record_donation",
        "schedule_thank_you_call",
        "send_receipt",
    ]
    assert run.values["thank_you_call"] == "call Ada about 500.00"


def test_one_receipt_per_donation_key():
    gift = donation("25.00")

    first = donation_receipt.start(donation_id=gift.pk, key=f"donation-{gift.pk}")
    again = donation_receipt.start(donation_id=gift.pk, key=f"donation-{gift.pk}")

    assert again.pk == first.pk
    assert OperationRun.objects.count() == 1


def test_a_donation_without_a_card_waits_for_a_retry_and_is_not_recorded():
    gift = donation("25.00", card_token="")

    run = donation_receipt.start(donation_id=gift.pk)

    run.refresh_from_db()
    assert (run.status, run.attempts) == ("pending", 1)  # retried with back-off
    assert run.error == f"ValueError: donation #{gift.pk} has no card to charge"
    gift.refresh_from_db()
    assert gift.status == Donation.Status.PENDING
