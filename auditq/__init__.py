"""auditq: asynchronous audit trails for Django, delivered exactly once by Celery workers."""

from importlib.metadata import PackageNotFoundError, version

from auditq.decorators import after_delete, after_save, audited, counter_cache
from auditq.stream.context import audit_context, disable_auditing

try:
    __version__ = version("auditq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "after_delete",
    "after_save",
    "audit_context",
    "audited",
    "counter_cache",
    "disable_auditing",
]
