"""The "Audit trail" button of audited models' change pages, whatever the app order.

:func:`install` wraps ``ModelAdmin.render_change_form`` (and ``AdminSite.index`` for the
dashboard link), because a template override works only when auditq comes before the
admin in ``INSTALLED_APPS``. Why and how: docs/admin.md."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast
from urllib.parse import urlencode

from django.contrib.admin import AdminSite, ModelAdmin
from django.contrib.contenttypes.models import ContentType
from django.db import models, router
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

from auditq import registry
from auditq.admin.dashboard import dashboard_url
from auditq.admin.filters import ModelFilter, ObjectFilter
from auditq.models import AuditEntry
from auditq.stream.encoding import encode
from auditq.stream.events import key_text

_INSTALLED = "auditq_installed"


def trail_url(request: HttpRequest, obj: models.Model | None) -> str | None:
    """The changelist of ``obj``'s entries, if it is audited and the user may see it."""
    if obj is None or obj.pk is None:
        return None
    if not registry.is_audited(cast(Any, obj)._meta.concrete_model):
        return None
    if not request.user.has_perm("auditq.view_auditentry"):
        return None
    try:
        changelist = reverse(
            "admin:auditq_auditentry_changelist", current_app=getattr(request, "current_app", None)
        )
    except NoReverseMatch:
        return None
    # The entries' database's content type (AUDITQ["DATABASE"] has keys of its own).
    content_types = ContentType.objects.db_manager(router.db_for_read(AuditEntry))
    content_type = content_types.get_for_model(obj)
    key = key_text(encode(obj.pk))
    query = {ModelFilter.parameter_name: content_type.pk, ObjectFilter.parameter_name: key}
    return f"{changelist}?{urlencode(query)}"


def extend(response: HttpResponse, template: str, **context: Any) -> HttpResponse:
    """Render a not yet rendered ``TemplateResponse`` through ``template``.

    ``template`` extends ``auditq_parent_template``: the template the response would have
    used, so that whatever the admin (or a theme) chose still renders.
    """
    if (
        isinstance(response, TemplateResponse)
        and not response.is_rendered
        and response.context_data is not None
    ):
        parent = response.resolve_template(response.template_name)
        response.context_data.update(context, auditq_parent_template=parent)
        response.template_name = template
    return response


def install() -> None:
    """Add the trail button and the dashboard link to the admin's pages (once)."""
    if getattr(ModelAdmin.render_change_form, _INSTALLED, False):
        return
    ModelAdmin.render_change_form = _with_trail_button(  # type: ignore[method-assign]
        ModelAdmin.render_change_form
    )
    AdminSite.index = _with_dashboard_link(AdminSite.index)  # type: ignore[method-assign]


def _with_trail_button(render_change_form: Callable[..., HttpResponse]) -> Any:
    @wraps(render_change_form)
    def wrapper(
        self: ModelAdmin,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        response = render_change_form(self, request, context, add, change, form_url, obj)
        url = trail_url(request, obj)
        if url:
            return extend(response, "auditq/trail_change_form.html", auditq_trail_url=url)
        return response

    setattr(wrapper, _INSTALLED, True)
    return wrapper


def _with_dashboard_link(index: Callable[..., HttpResponse]) -> Any:
    @wraps(index)
    def wrapper(
        self: AdminSite, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = index(self, request, extra_context)
        url = dashboard_url(request)
        if url:
            return extend(response, "auditq/index.html", auditq_dashboard_url=url)
        return response

    return wrapper


class AuditTrailMixin:
    """``ModelAdmin`` mixin: Django's "History" button opens the object's audit trail.

    Not needed for the "Audit trail" button: every audited model's change page has it.

    Example:
        >>> @admin.register(Donation)
        ... class DonationAdmin(AuditTrailMixin, admin.ModelAdmin):
        ...     audit_trail_replaces_history = True
    """

    audit_trail_replaces_history = False
    """Redirect Django's "History" (edits made in the admin only) to the audit trail."""

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if self.audit_trail_replaces_history:
            obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
            url = trail_url(request, obj)
            if url:
                return HttpResponseRedirect(url)
        return super().history_view(request, object_id, extra_context)  # type: ignore[misc]
