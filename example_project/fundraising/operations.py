"""A multi-step job: the donation receipt, one step per Celery task, resumable.

charge the card -> record the donation -> (a major gift: schedule a thank-you call) ->
send the receipt. Each step may run again if its worker dies before the step commits, so
each one is idempotent: the charge uses the run's key as the payment provider's
idempotency key, the record is a plain "set to succeeded", the receipt is stamped once.
"""

from decimal import Decimal

from auditq import Operation, retry_policy

from .models import Donation

THANK_YOU_CALL_FROM = Decimal("250.00")
"""A donation of at least this much gets a thank-you call before its receipt."""


@retry_policy(retries=5, backoff=1.0)  # a payment provider's hiccups deserve patience
def charge_card(step) -> None:
    """Charge the card, once: the provider deduplicates on the idempotency key."""
    donation = Donation.objects.get(pk=step.get("donation_id"))
    if not donation.card_token:
        raise ValueError(f"donation #{donation.pk} has no card to charge")
    step.set("payment_id", f"pay_{step.run_id}")  # what the provider would return


def record_donation(step) -> None:
    """Mark the donation succeeded (audited, in the run's context); big ones get a call."""
    donation = Donation.objects.get(pk=step.get("donation_id"))
    if donation.status != Donation.Status.SUCCEEDED:
        donation.status = Donation.Status.SUCCEEDED
        donation.save(update_fields=["status", "updated_at"])
    if donation.amount >= THANK_YOU_CALL_FROM:
        step.jump_to("major_gift")


def schedule_thank_you_call(step) -> None:
    """A person calls the donor of a major gift; then back to the receipt."""
    donation = Donation.objects.select_related("donor").get(pk=step.get("donation_id"))
    step.set("thank_you_call", f"call {donation.donor.name} about {donation.amount}")
    step.jump_to("main", send_receipt)


def send_receipt(step) -> None:
    """Send the receipt (here: remember to whom), once."""
    donation = Donation.objects.select_related("donor").get(pk=step.get("donation_id"))
    step.set("receipt_sent_to", donation.donor.email)


donation_receipt = Operation(
    "fundraising.donation_receipt",
    main=[charge_card, record_donation, send_receipt],
    major_gift=[schedule_thank_you_call],
)
