"""auditq: asynchronous audit trails for Django, delivered exactly once by Celery workers.

Every public name is importable from here (models from ``auditq.models``, admin classes
from ``auditq.admin``); this module is safe to import from a ``models.py``.
"""

from importlib.metadata import PackageNotFoundError, version

from auditq.decorators import after_delete, after_save, audited, counter_cache
from auditq.errors import HistoryIncomplete, RevertConflict
from auditq.operations import Operation, OperationError, retry_policy
from auditq.registry import Consumer
from auditq.stream.context import audit_context, disable_auditing
from auditq.stream.events import Event

try:
    __version__ = version("auditq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Consumer",
    "Event",
    "HistoryIncomplete",
    "Operation",
    "OperationError",
    "RevertConflict",
    "__version__",
    "after_delete",
    "after_save",
    "audit_context",
    "audited",
    "counter_cache",
    "disable_auditing",
    "retry_policy",
]
