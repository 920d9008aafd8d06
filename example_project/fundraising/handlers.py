"""Work that leaves the request: offloaded to Celery workers with ``@after_save``.

Both handlers recompute from what the database holds now instead of applying a delta, so
they give the same result whatever order their runs arrive in (retries, two workers).
"""

from django.db.models import Q

from auditq import after_save

from .models import Donation, Email, EmailEvent

# A donation that became one of these may change its email's conversion flag.
CONVERSION_STATES = (Donation.Status.SUCCEEDED, Donation.Status.REFUNDED)


def email_of(donation: Donation) -> Email | None:
    """The email that led to the donation: the one it names, else the newest one sent to
    the donor about the fundraiser."""
    if donation.email_id is not None:
        return donation.email
    return (
        Email.objects.filter(donor_id=donation.donor_id, fundraiser_id=donation.fundraiser_id)
        .order_by("-id")
        .first()
    )


@after_save(Donation, when=lambda donation: donation.status in CONVERSION_STATES)
def mark_email_donated(donation: Donation, event) -> None:
    """An email converted when a succeeded donation came from it (refunds undo that)."""
    email = email_of(donation)
    if email is None:
        return
    from_it = Q(email=email) | Q(
        email__isnull=True, donor_id=email.donor_id, fundraiser_id=email.fundraiser_id
    )
    donated = Donation.objects.filter(from_it, status=Donation.Status.SUCCEEDED).exists()
    if email.donated != donated:
        email.donated = donated
        email.save(update_fields=["donated"])  # audited, in the donation's own context


@after_save(EmailEvent)
def count_email_events(email_event: EmailEvent, event) -> None:
    """Keep the email's open and click counters equal to the events received."""
    email = email_event.email
    kinds = EmailEvent.objects.filter(email=email)
    opens = kinds.filter(kind=EmailEvent.Kind.OPEN).count()
    clicks = kinds.filter(kind=EmailEvent.Kind.CLICK).count()
    if (email.opens, email.clicks) != (opens, clicks):
        email.opens, email.clicks = opens, clicks
        email.save(update_fields=["opens", "clicks"])
