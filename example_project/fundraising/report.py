"""The per-fundraiser conversion report: emails, opens, clicks, donations, conversion."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from .models import Donation, Email, Fundraiser


def _per_fundraiser(queryset: QuerySet, aggregate: Any) -> Subquery:
    return Subquery(
        queryset.filter(fundraiser=OuterRef("pk"))
        .order_by()
        .values("fundraiser")
        .annotate(n=aggregate)
        .values("n"),
        output_field=IntegerField(),
    )


def with_conversion(fundraisers: QuerySet) -> QuerySet:
    """Annotate each fundraiser with its email and donation figures (one query)."""
    zero = Value(0)
    return fundraisers.annotate(
        emails_sent=Coalesce(_per_fundraiser(Email.objects.all(), Count("pk")), zero),
        email_opens=Coalesce(_per_fundraiser(Email.objects.all(), Sum("opens")), zero),
        email_clicks=Coalesce(_per_fundraiser(Email.objects.all(), Sum("clicks")), zero),
        converted=Coalesce(_per_fundraiser(Email.objects.filter(donated=True), Count("pk")), zero),
        succeeded=Coalesce(
            _per_fundraiser(Donation.objects.filter(status=Donation.Status.SUCCEEDED), Count("pk")),
            zero,
        ),
    )


def rows() -> list[Any]:
    """Every fundraiser with its figures and ``conversion_rate`` (converted / sent)."""
    return list(with_conversion(Fundraiser.objects.order_by("name")))
