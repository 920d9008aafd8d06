"""The admin of the outbox: rows set aside by the workers, their errors, and retry by hand.

A row is set aside when no worker can record it (a malformed payload, an unknown model, a
consumer that fails on one of its changes): it is kept with its error and skipped, so the
rows behind it are recorded. Once the cause is fixed (a deploy, a migration), users with
the ``auditq.change_outbox`` permission hand it back to the workers with the retry
action; a row that fails again is set aside again with its new error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from auditq.admin.formatting import when
from auditq.admin.readonly import ReadOnlyAdmin
from auditq.models import Outbox, OutboxQuerySet

RETRY_PERMISSION = "auditq.change_outbox"


class SetAsideFilter(admin.SimpleListFilter):
    """Set-aside rows, or the rows that wait for a worker."""

    title = "state"
    parameter_name = "set_aside"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "set aside"), ("no", "waiting for a worker")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "yes":
            return queryset.filter(failed_at__isnull=False)
        if value == "no":
            return queryset.filter(failed_at__isnull=True)
        return queryset


@admin.register(Outbox)
class OutboxAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_display", "state_display", "error_display")
    list_filter = (SetAsideFilter,)
    ordering = ("id",)
    show_facets = admin.ShowFacets.NEVER
    actions = ("retry_selected",)
    fields = (
        "id",
        "state_display",
        "created_display",
        "failed_display",
        "error_text",
        "key",
        "payload_display",
    )
    readonly_fields = fields

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RETRY_PERMISSION)

    @admin.action(description="Retry the selected set-aside rows", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: OutboxQuerySet) -> None:
        count = queryset.retry()
        self.message_user(
            request,
            f"{count} set-aside row{'s' if count != 1 else ''} handed back to the workers; "
            "a row that fails again is set aside again.",
            messages.SUCCESS if count else messages.WARNING,
        )

    @admin.display(description="written", ordering="created_at")
    def created_display(self, row: Outbox) -> str:
        return when(row.created_at)

    @admin.display(description="set aside")
    def failed_display(self, row: Outbox) -> str:
        return when(row.failed_at) if row.failed_at else "-"

    @admin.display(description="state")
    def state_display(self, row: Outbox) -> str:
        if row.failed_at is not None:
            return "set aside"
        return "waiting (another version's worker)" if row.error else "waiting"

    @admin.display(description="error")
    def error_display(self, row: Outbox) -> str:
        return row.error[:160]

    @admin.display(description="error")
    def error_text(self, row: Outbox) -> str:
        return format_html("<pre>{}</pre>", row.error) if row.error else "-"

    @admin.display(description="payload")
    def payload_display(self, row: Outbox) -> str:
        try:
            text = json.dumps(json.loads(row.payload), indent=2, ensure_ascii=False)
        except ValueError:
            text = row.payload
        return format_html('<pre class="auditq-json">{}</pre>', text)


@dataclass(frozen=True)
class SetAside:
    """Outbox rows set aside, for the dashboard."""

    count: int
    """How many rows wait for a retry by hand."""
    newest: list[Outbox]
    """The newest of them, with their errors."""


def set_aside(newest: int = 5) -> SetAside:
    """The set-aside rows: how many, and the newest ones (without their payloads)."""
    rows = Outbox.objects.set_aside()
    count = rows.count()
    latest = list(rows.defer("payload").order_by("-failed_at", "-id")[:newest]) if count else []
    return SetAside(count, latest)
