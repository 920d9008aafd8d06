"""The read-only admin of ``AuditEntry``: the list, the search, and an entry's diff page.

Entries are a record of the past: nobody adds, changes or deletes them here, superusers
included (retention is ``auditq_prune``'s job). The list stays fast on millions of rows:
no full ``COUNT(*)``, filters that never scan the table for their choices, an ordering
and a search that the indexes serve.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, URLPattern, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from auditq import diffs
from auditq.admin import as_of, chains, dashboard, exports, figures, reverts
from auditq.admin.date_hierarchy import YearsFromIndex
from auditq.admin.filters import ActorFilter, ModelFilter, ObjectFilter, SearchedPeriodFilter
from auditq.admin.formatting import when
from auditq.admin.newest_first import SEARCH_ORDERING, SearchChangeList, newest_first
from auditq.admin.paginators import CappedCountPaginator, SearchResultsPaginator
from auditq.admin.readonly import ReadOnlyAdmin
from auditq.models import AuditEntry

EFFECTS_SHOWN = 50
"""The entries a change caused that its page lists, at most."""


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "when_display",
        "action",
        "model_display",
        "object_link",
        "actor_repr_display",
        "changed_fields_display",
    )
    list_filter = (
        "action",
        ModelFilter,
        ActorFilter,
        ObjectFilter,
        "occurred_at",
        SearchedPeriodFilter,
    )
    list_select_related = ("content_type",)
    search_fields = ("object_pk", "object_repr", "actor_repr")  # see get_search_results()
    search_help_text = "Exact object key, or part of the object's or the actor's name."
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at", "-id")
    paginator = CappedCountPaginator
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = (reverts.revert_entries,)
    has_revert_permission = reverts.has_revert_permission
    fields = (
        "when_display",
        "recorded_display",
        "action",
        "content_type",
        "object_pk",
        "object_link",
        "actor_display",
        "remote_addr",
        "request_id",
        "context_display",
        "event_id",
        "chain_display",
    )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Entries appear only once a worker records them: say so when changes wait and
        # no worker is alive, or the list looks complete while it is not.
        context = {
            "auditq_unrecorded": figures.unrecorded(),
            **exports.form_context(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def get_list_display(self, request: HttpRequest) -> Any:
        # The chain column only while a chain is found broken (one query on a small
        # table, once a request: Django asks for the columns twice a page).
        found = getattr(request, "_auditq_chain_breaks", None)
        if found is None:
            found = request._auditq_chain_breaks = chains.breaks()  # type: ignore[attr-defined]
        if not found:
            return self.list_display
        return (*self.list_display, chains.mark_column(found))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[SearchChangeList]:
        return SearchChangeList

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist: Any = super().get_changelist_instance(request)
        changelist.queryset.__class__ = YearsFromIndex
        if changelist.query:
            # No date hierarchy on search results: its MIN/MAX of a rare match makes
            # PostgreSQL walk the time index past most of the table (0.3 s on 1M rows).
            changelist.date_hierarchy = None
            # A search's page: from the newest partition alone when it holds the page.
            changelist.result_list = newest_first(changelist.result_list)
        # The search form says when a search covers only the recent entries.
        changelist.auditq_searched_since = None
        for spec in changelist.filter_specs:
            if isinstance(spec, SearchedPeriodFilter) and spec.since and spec.value() is None:
                changelist.auditq_searched_since = spec.since
                changelist.auditq_search_all_url = changelist.get_query_string(
                    {spec.parameter_name: spec.ALL}
                )
        return changelist

    def get_ordering(self, request: HttpRequest) -> Any:
        if request.GET.get(SEARCH_VAR, "").strip():
            return SEARCH_ORDERING  # the same order, from the search indexes
        return self.ordering

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: models.QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        searched = request.GET.get(SEARCH_VAR, "").strip()
        kind = SearchResultsPaginator if searched else self.paginator
        return kind(queryset, per_page, orphans, allow_empty_first_page)

    def action_checkbox(self, obj: AuditEntry) -> SafeString:
        # Django's, written out: its form widget renders a template per row, about a
        # fifth of a 100-entry page's time.
        label = format_html(_("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: models.QuerySet, search_term: str
    ) -> tuple[models.QuerySet, bool]:
        """Exact object key, or part of the object's repr or of the actor's name.

        By hand rather than Django's ``search_fields`` lookups: the key is compared
        case-sensitively, which the ``auditq_entry_key`` index serves (Django's ``iexact``
        is not), and the ``icontains`` on the reprs is served by pg_trgm indexes on
        PostgreSQL (migration 0003).
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        found = Q(object_pk=term) | Q(object_repr__icontains=term) | Q(actor_repr__icontains=term)
        return queryset.filter(found), False

    @admin.display(description="time", ordering="occurred_at")
    def when_display(self, entry: AuditEntry) -> str:
        return when(entry.occurred_at)

    @admin.display(description="recorded")
    def recorded_display(self, entry: AuditEntry) -> str:
        delay = (entry.recorded_at - entry.occurred_at).total_seconds()
        return f"{when(entry.recorded_at)} ({delay:.3f} s after the change)"

    @admin.display(description="object")
    def object_link(self, entry: AuditEntry) -> str:
        model = entry.content_type.model_class()
        url = None
        if entry.action != AuditEntry.Action.DELETE and model is not None:
            url = self._change_url(model, entry.object_pk)
        if url is None:
            return entry.object_repr
        return format_html('<a href="{}">{}</a>', url, entry.object_repr)

    def _change_url(self, model: type[models.Model], key: str) -> str | None:
        """An object's change page in this admin site, built without a query."""
        if not self.admin_site.is_registered(model):
            return None
        opts = model._meta
        try:
            return reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=[quote(key)],
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

    @admin.display(description="chain")
    def chain_display(self, entry: AuditEntry) -> str:
        return chains.describe(entry)

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
            context["title"] = diffs.title(obj)
            context["subtitle"] = f"{obj.object_repr} · {when(obj.occurred_at)}"
            context["auditq_diff"] = diffs.diff_rows(obj, link=self._change_url)
            context["auditq_object_trail_url"] = self._object_trail_url(obj)
            context["auditq_as_of_url"] = reverse(
                f"{self.admin_site.name}:auditq_auditentry_as_of", args=[quote(obj.pk)]
            )
            context["auditq_cause"] = self._cause(obj)
            context["auditq_effects"] = self._effects(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _entry_link(self, entry: AuditEntry) -> tuple[str, str]:
        url = reverse(f"{self.admin_site.name}:auditq_auditentry_change", args=[quote(entry.pk)])
        return url, f"{diffs.title(entry)} · {when(entry.occurred_at)}"

    def _cause(self, entry: AuditEntry) -> tuple[str | None, str] | None:
        """``(url, text)`` of the change whose handler made this one; no URL when that
        change has no entry (its model is not audited, or it was pruned)."""
        caused_by = entry.context.get("caused_by") if isinstance(entry.context, dict) else None
        if not caused_by:
            return None
        try:
            key = uuid.UUID(str(caused_by))
        except ValueError:
            return None, str(caused_by)
        rows = AuditEntry.objects.using(entry._state.db).select_related("content_type")
        found = rows.filter(event_id=key).first()
        if found is None:
            return None, f"change {key} (not in the trail: not audited, or pruned)"
        return self._entry_link(found)

    def _effects(self, entry: AuditEntry) -> list[tuple[str, str]]:
        """``(url, text)`` of the entries made by handlers of this change, oldest first
        (at most ``EFFECTS_SHOWN``; a partial index serves it on PostgreSQL)."""
        rows = AuditEntry.objects.using(entry._state.db).select_related("content_type")
        caused = rows.filter(context__caused_by=str(entry.event_id)).order_by("occurred_at", "id")
        return [self._entry_link(found) for found in caused[:EFFECTS_SHOWN]]

    def _object_trail_url(self, entry: AuditEntry) -> str:
        changelist = reverse(f"{self.admin_site.name}:auditq_auditentry_changelist")
        query = {
            ModelFilter.parameter_name: entry.content_type_id,
            ObjectFilter.parameter_name: entry.object_pk,
        }
        return f"{changelist}?{urlencode(query)}"

    def get_urls(self) -> list[URLPattern]:
        return [
            *dashboard.urls(self),
            *exports.urls(self),
            *as_of.urls(self),
            *super().get_urls(),
        ]
