"""Models of the fundraising example.

``__str__`` methods use the row's own columns only: the audit trail stores each
object's repr, and a repr that follows a foreign key would cost a query per save.
"""

from django.db import models

from auditq import audited, counter_cache


@audited
class Donor(models.Model):
    name = models.CharField(max_length=200)
    email = models.EmailField()
    # Counter cache: kept by auditq's workers (@counter_cache on Donation).
    donations_count = models.IntegerField(default=0)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


@audited
class Fundraiser(models.Model):
    name = models.CharField(max_length=200)
    # Counter caches: kept by auditq's workers (@counter_cache on Donation).
    donations_count = models.IntegerField(default=0)
    raised_total = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def conversion_rate(self) -> float:
        """Share of its emails that led to a donation (with the report's annotations)."""
        sent = getattr(self, "emails_sent", 0)
        return getattr(self, "converted", 0) / sent if sent else 0.0


@audited
class Email(models.Model):
    donor = models.ForeignKey(Donor, on_delete=models.CASCADE, related_name="emails")
    fundraiser = models.ForeignKey(Fundraiser, on_delete=models.CASCADE, related_name="emails")
    subject = models.CharField(max_length=200)
    opens = models.IntegerField(default=0)
    clicks = models.IntegerField(default=0)
    # Conversion flag: a donation came from this email.
    donated = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"Email #{self.pk}: {self.subject}"


@audited(exclude=["updated_at"], mask=["card_token"])
@counter_cache("fundraiser", field="donations_count")
@counter_cache(
    "fundraiser",
    field="raised_total",
    sum="amount",
    when=lambda d: d.status == Donation.Status.SUCCEEDED,
)
@counter_cache("donor", field="donations_count")
class Donation(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"

    amount = models.DecimalField(max_digits=12, decimal_places=2)
    donor = models.ForeignKey(Donor, on_delete=models.CASCADE, related_name="donations")
    fundraiser = models.ForeignKey(Fundraiser, on_delete=models.CASCADE, related_name="donations")
    email = models.ForeignKey(
        Email, on_delete=models.SET_NULL, null=True, blank=True, related_name="donations"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    card_token = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"Donation #{self.pk}: {self.amount} ({self.status})"


class EmailEvent(models.Model):
    """An open or a click reported by the mailing provider's webhook."""

    class Kind(models.TextChoices):
        OPEN = "open", "Open"
        CLICK = "click", "Click"

    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} of email #{self.email_id}"
