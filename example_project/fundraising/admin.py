from django.contrib import admin

from .models import Donation, Donor, Email, Fundraiser


@admin.register(Donor)
class DonorAdmin(admin.ModelAdmin):
    list_display = ("name", "email")
    search_fields = ("name", "email")


@admin.register(Fundraiser)
class FundraiserAdmin(admin.ModelAdmin):
    list_display = ("name", "donations_count", "raised_total")
    search_fields = ("name",)


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
