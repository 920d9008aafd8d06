"""Small helpers the tests share for reading the trail."""

from auditq.models import AuditEntry


def trail(obj) -> list[AuditEntry]:
    """The object's entries, oldest first."""
    return list(AuditEntry.objects.for_object(obj))


def only_entry(obj, action: str) -> AuditEntry:
    """The object's single entry with ``action``; fail if there are none or several."""
    found = [e for e in trail(obj) if e.action == action]
    assert len(found) == 1, [(e.action, e.changes) for e in trail(obj)]
    return found[0]
