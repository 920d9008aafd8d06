"""The admin of ``OperationRun``: the runs, the path each one took, and retry by hand.

Runs are a ledger: nobody adds, edits or deletes them here. Users with the
``auditq.change_operationrun`` permission may retry failed runs (one from its page, or
the selected ones) and cancel unfinished ones; the retried step is published after
commit, and the relay in the workers publishes it again if that fails.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from auditq import conf, operations
from auditq.admin import exports
from auditq.admin.formatting import progress, when
from auditq.admin.readonly import ReadOnlyAdmin
from auditq.models import OperationRun
from auditq.stream import sealing

RETRY_PERMISSION = "auditq.change_operationrun"


def queued(count: int) -> str:
    """What the retry actions tell the user."""
    return (
        f"{count} run{'s' if count != 1 else ''} queued for retry at the step that failed; "
        "a worker picks them up within a moment."
    )


class OperationFilter(admin.SimpleListFilter):
    """The registered operations (no scan of the table for choices)."""

    title = "operation"
    parameter_name = "operation"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(op.name, op.name) for op in sorted(operations.operations(), key=lambda o: o.name)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(name=value) if value else queryset


@admin.register(OperationRun)
class OperationRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_display",
        "name",
        "status",
        "step_display",
        "progress_display",
        "attempts",
        "started_by_display",
        "error_display",
    )
    list_display_links = ("id", "created_display")
    list_filter = ("status", OperationFilter, "created_at")
    # Not the start() arguments: a search would tell whether a masked one holds a guess.
    search_fields = ("name", "key")
    search_help_text = "Part of the operation's name, or its key."
    ordering = ("-created_at", "-id")
    show_facets = admin.ShowFacets.NEVER
    actions = ("retry_selected", "cancel_selected")
    fields = (
        "name",
        "key",
        "status",
        "started_by_display",
        "step_display",
        "progress_display",
        "attempts",
        "created_display",
        "started_display",
        "finished_display",
        "next_display",
        "error",
        "traceback_display",
        "params_display",
        "values_display",
    )
    readonly_fields = fields

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RETRY_PERMISSION)

    @admin.action(description="Retry the selected failed runs", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = operations.retry(queryset)
        self.message_user(request, queued(count), messages.SUCCESS if count else messages.WARNING)

    @admin.action(description="Cancel the selected runs", permissions=["retry"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = operations.cancel(queryset)
        self.message_user(
            request,
            f"{count} run{'s' if count != 1 else ''} cancelled: no further step will run.",
            messages.SUCCESS if count else messages.WARNING,
        )

    def get_urls(self) -> list[URLPattern]:
        retry_one = self.admin_site.admin_view(require_POST(partial(retry_view, self)))
        return [
            path("<path:object_id>/retry/", retry_one, name="auditq_operationrun_retry"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self.get_object(request, unquote(object_id))
        context = {
            **(extra_context or {}),
            "auditq_steps": list(run.steps.order_by("id")) if run is not None else [],
            "auditq_download": exports.download_url(request, self.admin_site.name, run)
            if run is not None
            else None,
            "auditq_link_hours": conf.get().EXPORT_LINK_SECONDS / 3600,
            "auditq_can_retry": run is not None
            and run.status == OperationRun.Status.FAILED
            and self.has_retry_permission(request),
        }
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="created", ordering="created_at")
    def created_display(self, run: OperationRun) -> str:
        return when(run.created_at)

    @admin.display(description="started")
    def started_display(self, run: OperationRun) -> str:
        return when(run.started_at) if run.started_at else "-"

    @admin.display(description="finished")
    def finished_display(self, run: OperationRun) -> str:
        return when(run.finished_at) if run.finished_at else "-"

    @admin.display(description="next attempt")
    def next_display(self, run: OperationRun) -> str:
        return when(run.next_attempt_at) if run.status == OperationRun.Status.PENDING else "-"

    @admin.display(description="started by")
    def started_by_display(self, run: OperationRun) -> str:
        if run.actor_id is None:
            return run.actor_repr or "-"
        return f"{run.actor_repr} (#{run.actor_id})"

    @admin.display(description="step")
    def step_display(self, run: OperationRun) -> str:
        return f"{run.branch}[{run.position}] {run.step.rsplit('.', 1)[-1]}"

    @admin.display(description="progress")
    def progress_display(self, run: OperationRun) -> str:
        text = progress(run.progress_done, run.progress_total)
        if run.progress is None:
            return text
        return format_html(
            '<progress value="{}" max="1" class="auditq-progress"></progress> {}',
            f"{run.progress:.4f}",
            text,
        )

    @admin.display(description="error")
    def error_display(self, run: OperationRun) -> str:
        return run.error[:120]

    @admin.display(description="traceback")
    def traceback_display(self, run: OperationRun) -> str:
        return format_html("<pre>{}</pre>", run.traceback) if run.traceback else "-"

    @admin.display(description="start() arguments")
    def params_display(self, run: OperationRun) -> str:
        return _json_masked(run.params)

    @admin.display(description="values set by the steps")
    def values_display(self, run: OperationRun) -> str:
        return _json_masked(run.values)


def _json_masked(data: Any) -> str:
    """JSON data for the page, values under names like masked fields written ``***``."""
    text = json.dumps(sealing.mask_named(data), indent=2, sort_keys=True)
    return format_html("<pre>{}</pre>", text)


def retry_view(
    model_admin: OperationRunAdmin, request: HttpRequest, object_id: str
) -> HttpResponse:
    """Retry one failed run from its page (POST, CSRF-checked, change permission needed)."""
    if not model_admin.has_retry_permission(request):
        raise PermissionDenied
    # get_object() answers None for a key that is not one (``abc``), as the change page.
    run = model_admin.get_object(request, unquote(object_id))
    if run is None:
        raise Http404("No such operation run.")
    count = operations.retry(OperationRun.objects.filter(pk=run.pk))
    if count:
        messages.success(request, queued(count))
    else:
        messages.warning(request, "The run has not failed: nothing to retry.")
    site = model_admin.admin_site.name
    return HttpResponseRedirect(reverse(f"{site}:auditq_operationrun_change", args=[object_id]))
