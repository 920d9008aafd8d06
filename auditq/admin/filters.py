"""The entry list's filters: their choices never scan the entries."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import SEARCH_VAR
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models, router
from django.http import HttpRequest

from auditq import conf, registry
from auditq.admin.paginators import estimated_rows
from auditq.models import AuditEntry


def _key(field: Any, value: str) -> Any:
    """``value`` as a key of ``field``; a malformed one (``²``: ``isdigit()`` but not
    ``int()``) or one beyond the column (a 20-digit number: SQLite's OverflowError when
    the query runs) becomes the admin's "bad lookup", as Django's own filters answer.

    Raises:
        IncorrectLookupParameters: the changelist redirects to ``?e=1``.
    """
    try:
        key = field.to_python(value)
        field.run_validators(key)  # integer fields: the database column's range
    except (ValueError, TypeError, ValidationError) as exc:
        raise IncorrectLookupParameters(exc) from exc
    return key


class ModelFilter(admin.SimpleListFilter):
    """The audited models, from the registry: choosing never scans the entries."""

    title = "model"
    parameter_name = "content_type__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # The content types of the entries' database (AUDITQ["DATABASE"]): its own keys.
        content_types = ContentType.objects.db_manager(router.db_for_read(AuditEntry))
        types = content_types.get_for_models(*registry.audited_models(), for_concrete_models=False)
        choices = {str(ct.pk): str(ct) for ct in types.values()}
        value = self.value()
        if value and value not in choices:
            # A model no longer audited still has entries: keep the current choice visible.
            # (A bad value is refused by queryset(), which runs next.)
            with contextlib.suppress(IncorrectLookupParameters, ContentType.DoesNotExist):
                key = _key(ContentType._meta.pk, value)
                choices[value] = str(content_types.get_for_id(key))
        return sorted(choices.items(), key=lambda choice: choice[1])

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(content_type_id=_key(ContentType._meta.pk, value))


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
        if not value:
            return queryset
        target = AuditEntry._meta.get_field("actor").target_field
        return queryset.filter(actor_id=_key(target, value))


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


class SearchedPeriodFilter(admin.SimpleListFilter):
    """On a big trail, a search covers the last ``AUDITQ["ADMIN_SEARCH_DAYS"]`` days unless
    a period is chosen; "all time" is one click away.

    A substring search costs in proportion to its matches over the whole table (pg_trgm's
    posting lists): on tens of millions of entries, hundreds of milliseconds. Within a
    recent window it reads only the newest partitions, or the newest part of the time index.
    """

    title = "searched"
    parameter_name = "searched"
    ALL = "all"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.since = self._since(request)
        if self.value() not in (None, self.ALL):
            raise IncorrectLookupParameters(f"searched={self.value()!r}: only {self.ALL!r}")

    @staticmethod
    def _since(request: HttpRequest) -> datetime.datetime | None:
        """The window's start (midnight UTC) if it applies to this request, else None."""
        settings = conf.get()
        days = settings.ADMIN_SEARCH_DAYS
        if days is None or not request.GET.get(SEARCH_VAR, "").strip():
            return None
        if any(key.startswith("occurred_at") for key in request.GET):
            return None  # a period chosen: the date hierarchy or the time filter
        above = settings.ADMIN_SEARCH_DAYS_ABOVE
        if above:
            estimate = estimated_rows(AuditEntry.objects.all())
            if estimate is None or estimate <= above:
                return None
        today = datetime.datetime.now(datetime.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return today - datetime.timedelta(days=days)

    def has_output(self) -> bool:
        return self.since is not None

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.ALL, "all time")]

    def choices(self, changelist: Any) -> Iterator[Any]:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": f"the last {conf.get().ADMIN_SEARCH_DAYS} days",
        }
        yield {
            "selected": self.value() == self.ALL,
            "query_string": changelist.get_query_string({self.parameter_name: self.ALL}),
            "display": "all time",
        }

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        if self.since is None or self.value() == self.ALL:
            return queryset
        return queryset.filter(occurred_at__gte=self.since)
