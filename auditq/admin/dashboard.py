"""The dashboard page: its URL, who may open it, and what it shows."""

from __future__ import annotations

from functools import partial

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.views.decorators.http import require_POST

from auditq import operations
from auditq.admin import callbacks as callbacks_admin
from auditq.admin import chains, chart, figures
from auditq.admin import operations as operations_admin
from auditq.admin import outbox as outbox_admin
from auditq.consumers import callbacks
from auditq.models import CallbackRun, OperationRun, Outbox


def dashboard_url(request: HttpRequest) -> str:
    """The dashboard's URL, or "" when the user may not see it."""
    if not request.user.has_perm("auditq.view_auditentry"):
        return ""
    try:
        return reverse("admin:auditq_dashboard", current_app=getattr(request, "current_app", None))
    except NoReverseMatch:
        return ""


def urls(model_admin: ModelAdmin) -> list[URLPattern]:
    """The dashboard's URL pattern, for the entries' admin (``admin:auditq_dashboard``)."""
    site = model_admin.admin_site
    admin_view = site.admin_view(partial(view, model_admin))

    def dashboard(request: HttpRequest) -> HttpResponse:
        # A signed-in user without staff status gets 403 rather than the login page.
        if request.user.is_authenticated and not site.has_permission(request):
            raise PermissionDenied
        return admin_view(request)

    retry_all = site.admin_view(require_POST(partial(retry_failed_callbacks, model_admin)))
    retry_operations = site.admin_view(require_POST(partial(retry_failed_operations, model_admin)))
    return [
        path("dashboard/", dashboard, name="auditq_dashboard"),
        path(
            "dashboard/retry-callbacks/",
            retry_all,
            name="auditq_dashboard_retry_callbacks",
        ),
        path(
            "dashboard/retry-operations/",
            retry_operations,
            name="auditq_dashboard_retry_operations",
        ),
    ]


def retry_failed_callbacks(model_admin: ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Retry every failed callback run (POST, CSRF-checked, change permission needed)."""
    if not request.user.has_perm(callbacks_admin.RETRY_PERMISSION):
        raise PermissionDenied
    count = callbacks.retry(CallbackRun.objects.filter(status=CallbackRun.Status.FAILED))
    messages.success(
        request, f"{count} failed callback run{'s' if count != 1 else ''} queued for retry."
    )
    return HttpResponseRedirect(reverse(f"{model_admin.admin_site.name}:auditq_dashboard"))


def retry_failed_operations(model_admin: ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Retry every failed operation run at its failed step (POST, CSRF-checked, change
    permission needed)."""
    if not request.user.has_perm(operations_admin.RETRY_PERMISSION):
        raise PermissionDenied
    count = operations.retry(OperationRun.objects.filter(status=OperationRun.Status.FAILED))
    messages.success(request, f"Failed operations: {operations_admin.queued(count)}")
    return HttpResponseRedirect(reverse(f"{model_admin.admin_site.name}:auditq_dashboard"))


def view(model_admin: ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Queue depth, workers, undelivered changes, lag, throughput and task result links."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    # Each run panel only for those who may view its model (its list answers others 403).
    may_view = partial(_may_view, request)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Audit trail dashboard",
        "opts": model_admin.opts,
        "queue": figures.queue_depth(),
        "workers": figures.workers(),
        "backlog": figures.backlog(),
        "counters": figures.pending_counters(),
        "lag": figures.lag(),
        "throughput": chart.throughput(),
        "verification": chains.verification(),
        "task_results": _task_result_links(model_admin),
        "callbacks": figures.failed_callbacks() if may_view(CallbackRun) else None,
        "can_retry_callbacks": request.user.has_perm("auditq.change_callbackrun"),
        "operations": figures.failed_operations() if may_view(OperationRun) else None,
        "can_retry_operations": request.user.has_perm("auditq.change_operationrun"),
        "set_aside": outbox_admin.set_aside() if may_view(Outbox) else None,
    }
    return TemplateResponse(request, "admin/auditq/dashboard.html", context)


def _may_view(request: HttpRequest, model: type[Model]) -> bool:
    """Whether the user may see ``model``'s rows, as its admin decides (view or change)."""
    opts = model._meta
    return any(
        request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


def _task_result_links(model_admin: ModelAdmin) -> list[tuple[str, str]]:
    """Links to django-celery-results' task results, when its admin is there."""
    name = f"{model_admin.admin_site.name}:django_celery_results_taskresult_changelist"
    try:
        changelist = reverse(name)
    except NoReverseMatch:
        return []
    return [
        ("Failed tasks", f"{changelist}?status__exact=FAILURE"),
        ("Retried tasks", f"{changelist}?status__exact=RETRY"),
        ("All task results", changelist),
    ]
