"""Read-only admin for the audit trail: entries are a record of the past."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from auditq.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "action", "content_type", "object_repr", "actor_repr")
    list_filter = ("action", "content_type", "occurred_at")
    list_select_related = ("content_type",)
    search_fields = ("=object_pk", "object_repr", "actor_repr")
    date_hierarchy = "occurred_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
