"""The entry list's filters: their choices never scan the entries."""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models, router
from django.http import HttpRequest

from auditq import registry
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
