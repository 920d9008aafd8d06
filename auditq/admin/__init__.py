"""auditq's admin: the read-only audit trail, the "Audit trail" button, the dashboard.

Importing it (the admin's autodiscovery does) registers ``AuditEntry`` and adds the
"Audit trail" button to every audited model's change page (see :mod:`auditq.admin.trail`).
The names below are the public ones, for your own admins.
"""

from auditq.admin import trail
from auditq.admin.callbacks import CallbackRunAdmin
from auditq.admin.date_hierarchy import YearsFromIndex
from auditq.admin.entries import AuditEntryAdmin
from auditq.admin.operations import OperationRunAdmin
from auditq.admin.outbox import OutboxAdmin
from auditq.admin.paginators import CappedCountPaginator
from auditq.admin.trail import AuditTrailMixin, trail_url

__all__ = [
    "AuditEntryAdmin",
    "AuditTrailMixin",
    "CallbackRunAdmin",
    "CappedCountPaginator",
    "OperationRunAdmin",
    "OutboxAdmin",
    "YearsFromIndex",
    "trail_url",
]

trail.install()
