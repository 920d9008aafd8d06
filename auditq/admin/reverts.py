"""The "Revert selected changes" action of the trail: a confirmation page, then each
entry's ``revert()``, newest first, for staff who may change (or, for a delete, add)
the objects concerned."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from auditq.errors import RevertConflict
from auditq.models import AuditEntry
from auditq.revert import preview


def may_revert(request: HttpRequest, entry: AuditEntry) -> bool:
    """Whether the user may put this entry's object back: change permission on its model
    (add permission to restore a deleted row)."""
    content_type = entry.content_type
    verb = "add" if entry.action == "delete" else "change"
    return request.user.has_perm(f"{content_type.app_label}.{verb}_{content_type.model}")


@admin.action(description="Revert selected changes", permissions=["revert"])
def revert_entries(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[AuditEntry]
) -> HttpResponse | None:
    entries = list(queryset.select_related("content_type").order_by("-occurred_at", "-id"))
    if not all(may_revert(request, entry) for entry in entries):
        raise PermissionDenied
    if request.POST.get("post") != "yes":
        return TemplateResponse(
            request,
            "admin/auditq/auditentry/revert_confirmation.html",
            {
                **model_admin.admin_site.each_context(request),
                "title": "Revert these changes?",
                "opts": model_admin.opts,
                "entries": entries,
                "plans": [(entry, [_shown(row) for row in preview(entry)]) for entry in entries],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )
    reverted, refused = 0, []
    for entry in entries:
        try:
            entry.revert()
        except (RevertConflict, ValueError) as exc:
            refused.append(str(exc))
        else:
            reverted += 1
    if reverted:
        messages.success(request, f"{reverted} change{'s' if reverted != 1 else ''} reverted.")
    for reason in refused:
        messages.error(request, reason[:1].upper() + reason[1:])
    return None


def _shown(row: tuple[str, Any, Any]) -> tuple[str, str, str]:
    name, current, after = row
    return name, _text(current), _text(after)


def _text(value: Any) -> str:
    if isinstance(value, set):
        return ", ".join(sorted(map(str, value))) or "(none)"
    return "(empty)" if value is None else str(value)


def has_revert_permission(model_admin: Any, request: HttpRequest) -> bool:
    """Offer the action to staff who may change something; each entry is checked again."""
    return bool(request.user.is_active and request.user.is_staff)
