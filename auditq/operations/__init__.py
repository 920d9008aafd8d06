"""Operations: multi-step background jobs whose progress lives in the database.

``definition`` holds the DSL (``Operation``, ``Step``, ``retry_policy``), ``catalog`` the
operations defined by name, ``publishing`` sends due steps to the workers and
``executor`` runs one step at most once at a time. How a step completes once, and how a
failed run resumes: docs/operations.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from auditq.operations.catalog import OperationError, get, operations
from auditq.operations.definition import Operation, RetryPolicy, Step, retry_policy
from auditq.operations.publishing import RUN

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from auditq.models import OperationRun, OperationRunQuerySet

__all__ = [
    "RUN",
    "Operation",
    "OperationError",
    "RetryPolicy",
    "Step",
    "cancel",
    "get",
    "operations",
    "retry",
    "retry_policy",
]


def retry(runs: QuerySet[OperationRun]) -> int:
    """Resume the failed ``runs`` at their failed step; return how many (the same as
    ``runs.retry()``: ``OperationRun.objects`` is an ``OperationRunQuerySet``)."""
    return cast("OperationRunQuerySet", runs).retry()


def cancel(runs: QuerySet[OperationRun]) -> int:
    """Stop ``runs`` before their next step; return how many (the same as
    ``runs.cancel()``)."""
    return cast("OperationRunQuerySet", runs).cancel()
