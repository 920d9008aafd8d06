"""Read-only admin for the audit trail, per-object trail links, and the dashboard.

Entries are a record of the past: nobody adds, changes or deletes them here, superusers
included (retention is ``auditq_prune``'s job). The changelist stays fast on millions of
rows: no full ``COUNT(*)``, filters that never scan the table for their choices, and an
ordering that matches the indexes.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, update_wrapper
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import Max, Min
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from auditq import dashboard, registry
from auditq.encoding import MASK
from auditq.models import AuditEntry, AuditEntryQuerySet

LINE_DIFF_MIN_CHARS = 80
"""Text at least this long, or with a line break, is shown as a line diff."""


class CappedCountPaginator(Paginator):
    """Counts at most ``CAP`` rows; an unfiltered list on PostgreSQL uses the planner's estimate.

    Django counts the whole filtered queryset to paginate, and on millions of rows that
    ``COUNT(*)`` costs far more than the page. Past the cap the count is approximate,
    which only matters to someone paging beyond page ``CAP / list_per_page``.
    """

    CAP = 10_000
    approximate = ""
    """How the count is approximate, for display: ``""``, ``"about"`` or ``"more than"``."""

    @cached_property
    def count(self) -> int:
        queryset: Any = self.object_list
        if not queryset.query.where:
            estimate = _estimated_rows(queryset)
            if estimate is not None and estimate > self.CAP:
                self.approximate = "about"
                return estimate
        # No ORDER BY: counting needs none, and without it PostgreSQL counts from an index.
        capped = queryset.order_by()[: self.CAP + 1].count()
        if capped > self.CAP:
            self.approximate = "more than"
            return self.CAP
        return capped


class YearsFromIndex(AuditEntryQuerySet):
    """The changelist's queryset: the date hierarchy's years without a scan of the table.

    Django lists the years with ``SELECT DISTINCT date_trunc('year', ...)``, which reads
    and sorts every row: most of a changelist's time on millions of entries. Here the
    first and last dates come from the index, and each year in between is kept if one
    entry of it exists (one index probe per year).
    """

    def datetimes(self, field_name: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        if kind != "year":
            return super().datetimes(field_name, kind, *args, **kwargs)  # type: ignore[arg-type]
        bounds = self.order_by().aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        zone = timezone.get_current_timezone() if settings.USE_TZ else None
        first, last = (
            timezone.localtime(bounds[key]) if zone else bounds[key] for key in ("first", "last")
        )
        years = []
        for year in range(first.year, last.year + 1):
            start = datetime.datetime(year, 1, 1, tzinfo=zone)
            end = datetime.datetime(year + 1, 1, 1, tzinfo=zone)
            span = {f"{field_name}__gte": start, f"{field_name}__lt": end}
            if self.filter(**span).exists():
                years.append(start)
        return years


def _estimated_rows(queryset: models.QuerySet) -> int | None:
    """PostgreSQL's row estimate for the table (kept by autovacuum), or None elsewhere."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    # -1: the table was never analysed.
    return int(row[0]) if row and row[0] >= 0 else None


def _filtered(queryset: models.QuerySet, **lookup: Any) -> models.QuerySet:
    """``queryset.filter(**lookup)``; a malformed value becomes the admin's "bad lookup"."""
    try:
        return queryset.filter(**lookup)
    except (ValueError, ValidationError) as exc:
        raise IncorrectLookupParameters(exc) from exc


class ModelFilter(admin.SimpleListFilter):
    """The audited models, from the registry: choosing never scans the entries."""

    title = "model"
    parameter_name = "content_type__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        types = ContentType.objects.get_for_models(
            *registry.audited_models(), for_concrete_models=False
        )
        choices = {str(ct.pk): str(ct) for ct in types.values()}
        value = self.value()
        if value and value not in choices and value.isdigit():
            # A model no longer audited still has entries: keep the current choice visible.
            with contextlib.suppress(ContentType.DoesNotExist):
                choices[value] = str(ContentType.objects.get_for_id(int(value)))
        return sorted(choices.items(), key=lambda choice: choice[1])

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        value = self.value()
        return _filtered(queryset, content_type_id=value) if value else queryset


class ActorFilter(admin.SimpleListFilter):
    """Actors of the most recent entries, not every user: the users table may be huge."""

    title = "actor (recent)"
    parameter_name = "actor"
    NONE = "none"
    SCAN = 500
    """How many recent entries with an actor are read to find the choices."""
    CHOICES = 15
    """How many actors are offered at most."""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = (
            AuditEntry.objects.filter(actor__isnull=False)
            .order_by("-occurred_at")
            .values_list("actor_id", "actor_repr")[: self.SCAN]
        )
        choices: dict[str, str] = {}
        for actor_id, actor_repr in recent:
            choices.setdefault(str(actor_id), actor_repr or f"#{actor_id}")
            if len(choices) == self.CHOICES:
                break
        return [*choices.items(), (self.NONE, "no actor (system)")]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        value = self.value()
        if value == self.NONE:
            return queryset.filter(actor__isnull=True)
        return _filtered(queryset, actor_id=value) if value else queryset


class ObjectFilter(admin.SimpleListFilter):
    """One object's trail (``?object_pk=``): shown only while it is applied."""

    title = "object key"
    parameter_name = "object_pk"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        value = self.value()
        return queryset.filter(object_pk=value) if value else queryset


@dataclass(frozen=True)
class Cell:
    """One side of a change, as text for the template (which escapes it)."""

    text: str | None
    """The value as text: JSON for non-strings, pretty-printed when nested; ``None`` for null."""
    masked: bool = False
    """The value was masked at capture: only the fact of the change is known."""


@dataclass(frozen=True)
class DiffRow:
    """One field of an entry's field-by-field diff."""

    field: str
    """The field's name."""
    kind: str
    """``"value"`` (old → new), ``"lines"`` (a line diff) or ``"m2m"`` (removed / added)."""
    old: Cell
    """Old value; for ``"m2m"`` the removed keys."""
    new: Cell
    """New value; for ``"m2m"`` the added keys."""
    lines: tuple[tuple[str, str], ...] = ()
    """``(tag, text)`` for ``"lines"``: tag is ``"add"``, ``"del"``, ``"ctx"`` or ``"hunk"``."""


def _cell(value: Any) -> Cell:
    if value is None:
        return Cell(None)
    if value == MASK:
        return Cell(MASK, masked=True)
    if isinstance(value, str):
        return Cell(value)
    indent = 2 if isinstance(value, dict | list) else None
    return Cell(json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False))


def _line_diff(old: str, new: str) -> tuple[tuple[str, str], ...]:
    tags = {"+": "add", "-": "del", " ": "ctx", "@": "hunk"}
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    return tuple((tags[line[0]], line[1:]) for line in list(diff)[2:])


def diff_rows(entry: AuditEntry) -> list[DiffRow]:
    """Turn an entry's changes into rows a person can read."""
    rows = []
    for name, change in entry.changes.items():
        if isinstance(change, dict):
            removed = ", ".join(map(str, change.get("removed", []))) or None
            added = ", ".join(map(str, change.get("added", []))) or None
            rows.append(DiffRow(name, "m2m", Cell(removed), Cell(added)))
            continue
        old, new = _cell(change[0]), _cell(change[1])
        texts = (old.text, new.text)
        if (
            None not in texts
            and not (old.masked or new.masked)
            and any("\n" in t or len(t) >= LINE_DIFF_MIN_CHARS for t in texts if t)
        ):
            lines = _line_diff(old.text or "", new.text or "")
            rows.append(DiffRow(name, "lines", old, new, lines))
        else:
            rows.append(DiffRow(name, "value", old, new))
    return rows


def trail_url(request: HttpRequest, obj: models.Model | None) -> str | None:
    """The changelist of ``obj``'s entries, if it is audited and the user may see it."""
    if obj is None or obj.pk is None or not registry.is_audited(type(obj)):
        return None
    if not request.user.has_perm("auditq.view_auditentry"):
        return None
    try:
        changelist = reverse(
            "admin:auditq_auditentry_changelist", current_app=getattr(request, "current_app", None)
        )
    except NoReverseMatch:
        return None
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=False)
    query = {ModelFilter.parameter_name: content_type.pk, ObjectFilter.parameter_name: obj.pk}
    return f"{changelist}?{urlencode(query)}"


class AuditTrailMixin:
    """``ModelAdmin`` mixin: the change page links to the object's audit trail.

    auditq's own ``admin/change_form.html`` adds the link to every audited model's change
    page when ``"auditq"`` comes before ``"django.contrib.admin"`` in ``INSTALLED_APPS``.
    Use this mixin when it cannot (another app overrides that template first), or to make
    Django's "History" button open the audit trail instead of the admin's log.

    Example:
        >>> @admin.register(Donation)
        ... class DonationAdmin(AuditTrailMixin, admin.ModelAdmin):
        ...     audit_trail_replaces_history = True
    """

    audit_trail_replaces_history = False
    """Redirect Django's "History" (edits made in the admin only) to the audit trail."""

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        response = super().render_change_form(  # type: ignore[misc]
            request, context, add, change, form_url, obj
        )
        if (
            obj is not None
            and isinstance(response, TemplateResponse)
            and response.context_data is not None
        ):
            # Wrap whatever the admin chose (a custom or per-model template included),
            # so that the link does not depend on the order of INSTALLED_APPS.
            response.context_data["auditq_parent_template"] = response.resolve_template(
                response.template_name
            )
            response.template_name = "auditq/trail_change_form.html"
        return response

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if self.audit_trail_replaces_history:
            obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
            url = trail_url(request, obj) if obj is not None else None
            if url:
                return HttpResponseRedirect(url)
        return super().history_view(request, object_id, extra_context)  # type: ignore[misc]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = (
        "occurred_at",
        "action",
        "model_display",
        "object_link",
        "actor_repr_display",
        "changed_fields_display",
    )
    list_filter = ("action", ModelFilter, ActorFilter, ObjectFilter, "occurred_at")
    list_select_related = ("content_type",)
    search_fields = ("=object_pk", "object_repr", "actor_repr")
    search_help_text = "Exact object key, or part of the object's or the actor's name."
    date_hierarchy = "occurred_at"

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        changelist.queryset.__class__ = YearsFromIndex
        return changelist

    ordering = ("-occurred_at", "-id")
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = (
        "occurred_at",
        "recorded_at",
        "action",
        "content_type",
        "object_pk",
        "object_link",
        "actor_display",
        "remote_addr",
        "request_id",
        "context_display",
        "event_id",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="object")
    def object_link(self, entry: AuditEntry) -> str:
        url = self._object_url(entry)
        if url is None:
            return entry.object_repr
        return format_html('<a href="{}">{}</a>', url, entry.object_repr)

    def _object_url(self, entry: AuditEntry) -> str | None:
        """The object's own change page, built without a query (deleted objects: none)."""
        model = entry.content_type.model_class()
        if (
            entry.action == AuditEntry.Action.DELETE
            or model is None
            or not self.admin_site.is_registered(model)
        ):
            return None
        opts = model._meta
        try:
            return reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=[quote(entry.object_pk)],
            )
        except NoReverseMatch:
            return None

    @admin.display(description="model")
    def model_display(self, entry: AuditEntry) -> str:
        return str(entry.content_type)

    @admin.display(description="actor")
    def actor_repr_display(self, entry: AuditEntry) -> str:
        return entry.actor_repr

    @admin.display(description="changed fields")
    def changed_fields_display(self, entry: AuditEntry) -> str:
        return ", ".join(entry.changed_fields)

    @admin.display(description="actor")
    def actor_display(self, entry: AuditEntry) -> str:
        if entry.actor_id is None:
            return entry.actor_repr or "-"
        return f"{entry.actor_repr} (#{entry.actor_id})"

    @admin.display(description="context")
    def context_display(self, entry: AuditEntry) -> str:
        if not entry.context:
            return "-"
        text = json.dumps(entry.context, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre class="auditq-json">{}</pre>', text)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context["auditq_diff"] = diff_rows(obj)
            context["auditq_object_trail_url"] = self._object_trail_url(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _object_trail_url(self, entry: AuditEntry) -> str:
        changelist = reverse(f"{self.admin_site.name}:auditq_auditentry_changelist")
        query = {
            ModelFilter.parameter_name: entry.content_type_id,
            ObjectFilter.parameter_name: entry.object_pk,
        }
        return f"{changelist}?{urlencode(query)}"

    def get_urls(self) -> list[URLPattern]:
        return [
            path("dashboard/", self._guarded(self.dashboard_view), name="auditq_dashboard"),
            *super().get_urls(),
        ]

    def _guarded(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        """``admin_view``, but a signed-in user without staff status gets 403, not a login."""
        admin_view = self.admin_site.admin_view(view)

        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.user.is_authenticated and not self.admin_site.has_permission(request):
                raise PermissionDenied
            return admin_view(request, *args, **kwargs)

        return update_wrapper(guarded, view)

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Queue depth, undelivered changes, throughput and links to task results."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Audit trail dashboard",
            "opts": self.opts,
            "queue": dashboard.queue_depth(),
            "backlog": dashboard.backlog(),
            "throughput": dashboard.throughput(),
            "lag": dashboard.lag(),
            "task_results": self._task_result_links(),
        }
        return TemplateResponse(request, "admin/auditq/dashboard.html", context)

    def _task_result_links(self) -> list[tuple[str, str]]:
        """Links to django-celery-results' task results, when its admin is there."""
        name = f"{self.admin_site.name}:django_celery_results_taskresult_changelist"
        try:
            changelist = reverse(name)
        except NoReverseMatch:
            return []
        return [
            ("Failed tasks", f"{changelist}?status__exact=FAILURE"),
            ("Retried tasks", f"{changelist}?status__exact=RETRY"),
            ("All task results", changelist),
        ]
