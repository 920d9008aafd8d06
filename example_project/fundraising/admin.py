from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Donation, Donor, Email, EmailEvent, Fundraiser
from .report import with_conversion


@admin.register(Donor)
class DonorAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "donations_count")
    search_fields = ("name", "email")
    readonly_fields = ("donations_count",)  # a counter cache: auditq's workers keep it


@admin.register(Fundraiser)
class FundraiserAdmin(admin.ModelAdmin):
    """The per-fundraiser conversion report, as list columns."""

    list_display = (
        "name",
        "emails",
        "opens",
        "clicks",
        "donations",
        "conversion",
        "donations_count",
        "raised_total",
    )
    search_fields = ("name",)
    readonly_fields = ("donations_count", "raised_total")  # counter caches

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return with_conversion(super().get_queryset(request))

    @admin.display(ordering="emails_sent")
    def emails(self, fundraiser: Any) -> int:
        return fundraiser.emails_sent

    @admin.display(ordering="email_opens")
    def opens(self, fundraiser: Any) -> int:
        return fundraiser.email_opens

    @admin.display(ordering="email_clicks")
    def clicks(self, fundraiser: Any) -> int:
        return fundraiser.email_clicks

    @admin.display(description="succeeded donations", ordering="succeeded")
    def donations(self, fundraiser: Any) -> int:
        return fundraiser.succeeded

    @admin.display(description="emails converted", ordering="converted")
    def conversion(self, fundraiser: Any) -> str:
        return f"{fundraiser.converted} ({fundraiser.conversion_rate:.0%})"


@admin.register(Email)
class EmailAdmin(admin.ModelAdmin):
    list_display = ("id", "subject", "donor", "fundraiser", "opens", "clicks", "donated")
    list_filter = ("donated", "fundraiser")
    search_fields = ("subject", "donor__name", "donor__email")
    list_select_related = ("donor", "fundraiser")
    raw_id_fields = ("donor", "fundraiser")


@admin.register(Donation)
class DonationAdmin(admin.ModelAdmin):
    list_display = ("id", "amount", "status", "donor", "fundraiser", "email", "created_at")
    list_filter = ("status", "fundraiser", "created_at")
    search_fields = ("donor__name", "donor__email", "fundraiser__name")
    list_select_related = ("donor", "fundraiser", "email")
    raw_id_fields = ("donor", "fundraiser", "email")
    readonly_fields = ("created_at", "updated_at")
    date_hierarchy = "created_at"


@admin.register(EmailEvent)
class EmailEventAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "email", "received_at")
    list_filter = ("kind",)
    raw_id_fields = ("email",)
