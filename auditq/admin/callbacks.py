"""The admin of ``CallbackRun``: what the handlers did, what failed, and a retry action.

Runs are a ledger: nobody adds, edits or deletes them here. Users with the
``auditq.change_callbackrun`` permission may retry failed runs; the relay in the workers
then publishes them within a moment.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from auditq import registry
from auditq.admin.formatting import when
from auditq.admin.readonly import ReadOnlyAdmin
from auditq.consumers import callbacks
from auditq.models import CallbackRun

RETRY_PERMISSION = "auditq.change_callbackrun"


class HandlerFilter(admin.SimpleListFilter):
    """The registered handlers (no scan of the table for choices)."""

    title = "handler"
    parameter_name = "handler"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(h.name, h.name) for h in sorted(registry.handlers(), key=lambda h: h.name)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(handler=value) if value else queryset


@admin.register(CallbackRun)
class CallbackRunAdmin(ReadOnlyAdmin):
    list_display = (
        "created_display",
        "handler",
        "object_display",
        "action",
        "status",
        "attempts",
        "error_display",
        "next_display",
    )
    list_filter = ("status", HandlerFilter, "action", "created_at")
    search_fields = ("last_error", "object_pk", "object_repr")
    search_help_text = "Part of the last error, or the object's key or name."
    ordering = ("-created_at", "-id")
    show_facets = admin.ShowFacets.NEVER
    actions = ("retry_now",)
    fields = (
        "handler",
        "status",
        "note",
        "model",
        "object_pk",
        "object_repr",
        "action",
        "event_id",
        "attempts_display",
        "created_display",
        "next_display",
        "finished_display",
        "errors_display",
        "event_display",
    )
    readonly_fields = fields

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RETRY_PERMISSION)

    @admin.action(description="Retry the selected runs now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = callbacks.retry(queryset)
        self.message_user(
            request,
            f"{count} run{'s' if count != 1 else ''} queued for retry; a worker picks "
            "them up within a moment.",
            messages.SUCCESS if count else messages.WARNING,
        )

    @admin.display(description="created", ordering="created_at")
    def created_display(self, run: CallbackRun) -> str:
        return when(run.created_at)

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_display(self, run: CallbackRun) -> str:
        return when(run.next_attempt_at) if run.status == CallbackRun.Status.PENDING else "-"

    @admin.display(description="finished")
    def finished_display(self, run: CallbackRun) -> str:
        return when(run.finished_at) if run.finished_at else "-"

    @admin.display(description="object")
    def object_display(self, run: CallbackRun) -> str:
        return f"{run.model} {run.object_repr or run.object_pk}"

    @admin.display(description="last error")
    def error_display(self, run: CallbackRun) -> str:
        return run.last_error[:120]

    @admin.display(description="attempts")
    def attempts_display(self, run: CallbackRun) -> str:
        return f"{run.attempts} of at most {run.max_attempts}"

    @admin.display(description="failed attempts")
    def errors_display(self, run: CallbackRun) -> str:
        if not run.errors:
            return "none"
        return format_html_join(
            "",
            "<p><strong>{}</strong> {}</p><pre>{}</pre>",
            ((e.get("at", ""), e.get("error", ""), e.get("traceback", "")) for e in run.errors),
        )

    @admin.display(description="event")
    def event_display(self, run: CallbackRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(run.event, indent=2, sort_keys=True))
