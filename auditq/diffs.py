"""An audit entry as a person reads it: a title, and one row per changed field.

Presentation only, with no admin or HTTP in it, so that the models and any view can use
it. Rows name fields by their verbose names, show choices by their labels and booleans
as Yes / No (as the admin does), and give foreign keys and many-to-many keys the related
object's label, found with one query per related model, whatever the number of rows.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import DEFAULT_DB_ALIAS, models, router
from django.utils.text import capfirst

from auditq import conf
from auditq.stream.encoding import MASK
from auditq.stream.events import m2m_keys

if TYPE_CHECKING:
    from auditq.models import AuditEntry

LINE_DIFF_MIN_CHARS = 80
"""Text at least this long, or with a line break, is shown as a line diff."""

VERBS = {"create": "created", "update": "changed", "delete": "deleted"}

Link = Callable[[type[models.Model], str], str | None]
"""Gives the URL of a related object's page (model, key), or None: how a view adds links."""


@dataclass(frozen=True)
class Related:
    """An object that a foreign key or many-to-many key points to."""

    key: str
    """The key as recorded."""
    label: str | None
    """``str()`` of the object; ``None`` when it no longer exists."""
    url: str | None = None
    """Its page, when the caller gave a ``link`` function and it has one."""


@dataclass(frozen=True)
class Cell:
    """One side of a change, as text for a template (which escapes it)."""

    text: str | None
    """The value as text: JSON for non-strings, pretty-printed when nested; ``None`` for null."""
    masked: bool = False
    """The value was masked at capture: only the fact of the change is known."""
    choice: str | None = None
    """The label of the value when the field has choices (``"Succeeded"`` for ``"succeeded"``)."""
    related: tuple[Related, ...] = ()
    """The objects a foreign key (one) or a many-to-many side (any number) points to."""
    boolean: bool | None = None
    """The value of a ``BooleanField`` without choices, for the admin's Yes / No (``text``
    keeps the JSON ``true`` / ``false``); ``None`` for other fields."""


@dataclass(frozen=True)
class DiffRow:
    """One field of an entry's field-by-field diff."""

    field: str
    """The field's name, as recorded."""
    label: str
    """The field's verbose name (its name when the model no longer has the field)."""
    kind: str
    """``"value"`` (old → new), ``"lines"`` (a line diff) or ``"m2m"`` (removed / added)."""
    old: Cell
    """Old value; for ``"m2m"`` the removed keys."""
    new: Cell
    """New value; for ``"m2m"`` the added keys."""
    lines: tuple[tuple[str, str], ...] = ()
    """``(tag, text)`` for ``"lines"``: tag is ``"add"``, ``"del"``, ``"ctx"`` or ``"hunk"``."""


def entry_model(entry: AuditEntry) -> type[models.Model] | None:
    """The entry's model class (from the cached content type); None if it is gone."""
    return _content_type(entry).model_class()


def _content_type(entry: AuditEntry) -> ContentType:
    # The content types of the entry's database: keys differ between databases.
    return ContentType.objects.db_manager(entry._state.db).get_for_id(entry.content_type_id)


def title(entry: AuditEntry) -> str:
    """Say what happened, as a page title: ``"Donation #53 changed by admin"``."""
    model = entry_model(entry)
    if model is not None:
        name = str(capfirst(model._meta.verbose_name))
    else:
        name = str(capfirst(_content_type(entry).model))
    verb = VERBS.get(entry.action, entry.action)
    by = f" by {entry.actor_repr}" if entry.actor_repr else ""
    return f"{name} #{entry.object_pk} {verb}{by}"


def diff_rows(
    entry: AuditEntry, link: Link | None = None, using: str | None = None
) -> list[DiffRow]:
    """Turn an entry's changes into rows a person can read.

    Foreign keys and many-to-many keys are labelled with one query per related model, on
    ``using`` (default: the database the entry came from; for an entry in
    ``AUDITQ["DATABASE"]``, where the router reads each related model). ``link`` adds URLs
    to them.
    """
    model = entry_model(entry)
    fields = {name: _field(model, name) for name in entry.changes}
    source = entry._state.db or DEFAULT_DB_ALIAS
    where = using or (None if source == conf.get().DATABASE else source)
    labels = _related_labels(entry.changes, fields, where)

    def related(field: models.Field | None, keys: Iterable[Any]) -> tuple[Related, ...]:
        if not _is_relation(field):
            return ()
        target = _target(field)
        found = labels.get(target, {})
        return tuple(
            Related(
                str(key),
                found.get(str(key)),
                link(target[0], str(key)) if link and str(key) in found else None,
            )
            for key in keys
        )

    rows = []
    for name, change in entry.changes.items():
        field = fields[name]
        label = str(capfirst(field.verbose_name)) if field is not None else name
        m2m = m2m_keys(change)
        if m2m is not None:
            removed, added = m2m
            rows.append(
                DiffRow(
                    name,
                    label,
                    "m2m",
                    Cell(_keys(removed), related=related(field, removed)),
                    Cell(_keys(added), related=related(field, added)),
                )
            )
            continue
        old, new = (_cell(field, value, related) for value in change)
        texts = (old.text, new.text)
        if (
            None not in texts
            and not (old.masked or new.masked)
            and any("\n" in t or len(t) >= LINE_DIFF_MIN_CHARS for t in texts if t)
        ):
            lines = _line_diff(old.text or "", new.text or "")
            rows.append(DiffRow(name, label, "lines", old, new, lines))
        else:
            rows.append(DiffRow(name, label, "value", old, new))
    return rows


def _field(model: type[models.Model] | None, name: str) -> models.Field | None:
    if model is None:
        return None
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return field if isinstance(field, models.Field) else None


def _is_relation(field: models.Field | None) -> bool:
    return field is not None and bool(field.many_to_many or field.many_to_one or field.one_to_one)


def _target(field: Any) -> tuple[type[models.Model], Any]:
    """The related model and the field whose value was recorded (a foreign key's ``to_field``)."""
    model = field.related_model
    return model, (model._meta.pk if field.many_to_many else field.target_field)


def _related_labels(
    changes: dict[str, Any], fields: dict[str, models.Field | None], using: str | None
) -> dict[tuple[type[models.Model], Any], dict[str, str]]:
    """``{(related model, field): {key: label}}`` for the keys in ``changes``: one query each."""
    wanted: dict[tuple[type[models.Model], Any], set[str]] = defaultdict(set)
    for name, change in changes.items():
        field = fields[name]
        if not _is_relation(field):
            continue
        m2m = m2m_keys(change)
        values = change if m2m is None else [*m2m[0], *m2m[1]]
        wanted[_target(field)].update(str(v) for v in values if v is not None and v != MASK)
    labels: dict[tuple[type[models.Model], Any], dict[str, str]] = {}
    for (model, to_field), keys in wanted.items():
        valid = []
        for key in keys:
            try:
                valid.append(to_field.to_python(key))
            except ValidationError:
                continue
        rows = model._base_manager.using(using or router.db_for_read(model))
        found = rows.filter(**{f"{to_field.attname}__in": valid}) if valid else []
        labels[model, to_field] = {str(getattr(obj, to_field.attname)): str(obj) for obj in found}
    return labels


def _keys(keys: list[Any]) -> str | None:
    return ", ".join(map(str, keys)) or None


def _cell(
    field: models.Field | None,
    value: Any,
    related: Callable[[models.Field | None, Iterable[Any]], tuple[Related, ...]],
) -> Cell:
    if value is None:
        return Cell(None)
    if value == MASK:
        return Cell(MASK, masked=True)
    text = value if isinstance(value, str) else _json(value)
    choice = None
    if field is not None and field.choices and isinstance(value, Hashable):
        found = dict(field.flatchoices).get(value)
        choice = str(found) if found is not None else None
    refs = related(field, [value]) if _is_relation(field) else ()
    boolean = value if isinstance(value, bool) and isinstance(field, models.BooleanField) else None
    return Cell(text, choice=choice, related=refs, boolean=None if choice else boolean)


def _json(value: Any) -> str:
    indent = 2 if isinstance(value, dict | list) else None
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)


def _line_diff(old: str, new: str) -> tuple[tuple[str, str], ...]:
    tags = {"+": "add", "-": "del", " ": "ctx", "@": "hunk"}
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    return tuple((tags[line[0]], line[1:]) for line in list(diff)[2:])
