"""One change per object per transaction (``AUDITQ["SQUASH"]``): a transaction's changes of
one object fold into the one that tells what the transaction did to it.

create + updates -> one create with the final values; updates -> one update, first old ->
last new, fields that end where they started dropped; create ... delete -> nothing;
updates + delete -> one delete with the values the transaction started from. Each
consumer folds its own data (:meth:`auditq.Consumer.squash`), so callbacks and counters
follow the folded change. A change after a delete (the key used again) stays apart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from auditq import registry
from auditq.stream.encoding import MASK, json_bytes
from auditq.stream.events import Change, key_text, m2m_change, m2m_keys

logger = logging.getLogger("auditq")


def squash(changes: Sequence[Change]) -> list[Change]:
    """``changes`` in commit order, each object's folded into one (at its first place)."""
    if len(changes) < 2:
        return list(changes)
    folded: list[Change | None] = []
    last: dict[tuple[str, str], int] = {}
    consumers = {consumer.name: consumer for consumer in registry.consumers()}
    for change in changes:
        key = (change.model, key_text(change.pk))
        at = last.get(key)
        earlier = folded[at] if at is not None else None
        if earlier is None or earlier.action == "delete" or change.action == "create":
            last[key] = len(folded)
            folded.append(change)
            continue
        try:
            folded[at] = _fold(earlier, change, consumers)  # type: ignore[index]
        except Exception:
            # Never the user's commit: the two changes are recorded apart, loudly.
            logger.exception("auditq: could not fold two changes of %s %r", *key)
            last[key] = len(folded)
            folded.append(change)
    return [change for change in folded if change is not None]


def _fold(earlier: Change, later: Change, consumers: Mapping[str, Any]) -> Change | None:
    """``later`` applied on top of ``earlier`` (neither a delete before, nor a create after);
    ``None`` when nothing is left (created and deleted, or every consumer says so)."""
    if later.action == "delete":
        if earlier.action == "create":
            return None
        action, changes = "delete", _started_from(earlier.changes, later.changes)
    elif earlier.action == "create":
        action, changes = "create", _apply(earlier.changes, later.changes)
    else:
        action, changes = "update", _merge(earlier.changes, later.changes)
    wanted = {}
    for name in dict.fromkeys([*earlier.consumers, *later.consumers]):
        consumer = consumers.get(name)
        if consumer is None:  # not this process's: keep what the last change asked
            data = later.consumers.get(name)
        else:
            data = consumer.squash(
                earlier.consumers.get(name), later.consumers.get(name), action, changes
            )
        if data is not None:
            wanted[name] = data
    if not wanted:
        return None
    repr_ = later.repr if later.repr is not None else earlier.repr
    return Change(later.model, later.pk, repr_, action, changes, later.at, later.context, wanted)


def _apply(created: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A create's values with an update's new values on top."""
    result = dict(created)
    for name, change in update.items():
        keys = m2m_keys(change)
        if keys is None:
            result[name] = [None, change[1]]
            continue
        before = m2m_keys(result.get(name)) or ([], [])
        _, added = _net(before, keys)
        if added:
            result[name] = m2m_change(added=added)
        else:
            result.pop(name, None)
    return result


def _merge(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two updates as one: first old -> last new; a field back where it started is gone."""
    result = dict(first)
    for name, change in second.items():
        keys = m2m_keys(change)
        if keys is not None:
            removed, added = _net(m2m_keys(result.get(name)) or ([], []), keys)
            if removed or added:
                result[name] = m2m_change(added=added, removed=removed)
            else:
                result.pop(name, None)
            continue
        old = result[name][0] if name in result else change[0]
        if old == MASK or not _same(old, change[1]):  # a masked field cannot tell: kept
            result[name] = [old, change[1]]
        else:
            result.pop(name, None)
    return result


def _started_from(updates: Mapping[str, Any], delete: Mapping[str, Any]) -> dict[str, Any]:
    """A delete's last values, replaced by those the earlier updates started from."""
    return {
        name: [updates[name][0], None]
        if name in updates and m2m_keys(updates[name]) is None
        else change
        for name, change in delete.items()
    }


def _net(first: tuple[list[Any], list[Any]], second: tuple[list[Any], list[Any]]) -> tuple:
    """``(removed, added)`` of two many-to-many changes in a row."""
    removed_1, added_1 = (set(map(_hashable, keys)) for keys in first)
    removed_2, added_2 = (set(map(_hashable, keys)) for keys in second)
    added = (added_1 - removed_2) | (added_2 - removed_1)
    removed = (removed_1 - added_2) | (removed_2 - added_1)
    return sorted(map(_plain, removed), key=repr), sorted(map(_plain, added), key=repr)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key  # composite keys are lists


def _plain(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON (``True`` is not ``1``): the values are already JSON-safe."""
    return json_bytes(old) == json_bytes(new)
