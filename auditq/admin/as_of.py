""" "View as of this entry": an object's audited values at the moment of one of its
entries, decoded from its trail (``AuditEntry.objects.as_of``), for staff who may view
the trail."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from auditq import diffs, registry
from auditq.admin.formatting import when
from auditq.errors import HistoryIncomplete
from auditq.models import AuditEntry
from auditq.revert import object_key


def urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """The view's URL, for the entries' admin."""
    return [
        path(
            "<path:object_id>/as-of/",
            model_admin.admin_site.admin_view(partial(as_of_view, model_admin)),
            name="auditq_auditentry_as_of",
        )
    ]


def as_of_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """The values of the entry's object just after the entry: one row per audited field
    the trail holds a value of (masked ones are said to be unknown, never shown)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    entry = model_admin.get_object(request, unquote(object_id))
    if entry is None:
        raise Http404("No such audit entry.")
    model = entry.content_type.model_class()
    values: dict[str, Any] | None = None
    problem = ""
    if model is None:
        problem = "Its model no longer exists."
    else:
        try:
            values = AuditEntry.objects.using(entry._state.db).as_of(
                (model, object_key(model, entry.object_pk)), entry.occurred_at
            )
        except HistoryIncomplete as exc:
            problem = str(exc)
    rows = [] if values is None else [_row(model, name, value) for name, value in values.items()]
    return TemplateResponse(
        request,
        "admin/auditq/auditentry/as_of.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "original": entry,
            "title": f"{entry.object_repr} as of {when(entry.occurred_at)}",
            "subtitle": diffs.title(entry),
            "rows": rows,
            "existed": values is not None,
            "problem": problem,
            "masked": sorted(_masked_names(model)) if model is not None else [],
        },
    )


def _row(model: Any, name: str, value: Any) -> tuple[str, str]:
    try:
        label = str(model._meta.get_field(name).verbose_name)
    except Exception:
        label = name
    if isinstance(value, set):
        return label, ", ".join(sorted(map(str, value))) or "(none)"
    return label, "(empty)" if value is None else str(value)


def _masked_names(model: Any) -> set[str]:
    tracking = registry.tracking(model)
    return {field.name for field in tracking.masked} if tracking else set()
