"""Admins of the test models: audited ones with a plain ModelAdmin (the trail link comes
from auditq's template), one with AuditTrailMixin, and an unaudited one."""

from django.contrib import admin

from auditq.admin import AuditTrailMixin
from tests.testapp.models import Account, Chosen, Document, Tag


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "status")


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    pass


@admin.register(Chosen)
class ChosenAdmin(AuditTrailMixin, admin.ModelAdmin):
    audit_trail_replaces_history = True


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    pass
