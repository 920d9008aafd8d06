"""auditq's tables: the trail (``AuditEntry``) and its hash chains (``AuditChain``,
``AuditChainLane``), the outbox that carries committed changes to the workers
(``Outbox``), the callbacks' ledger (``CallbackRun``), pending counter deltas
(``CounterDelta``), the workers' heartbeats, and operation runs with their step attempts
(``OperationRun``, ``StepRun``); one module for each group."""

from auditq.history import AuditEntryQuerySet
from auditq.models.ledgers import (
    CallbackRun,
    CounterDelta,
    Outbox,
    OutboxQuerySet,
    WorkerHeartbeat,
)
from auditq.models.operations import (
    OperationRun,
    OperationRunQuerySet,
    StepRun,
    operation_runs_due,
)
from auditq.models.trail import LANES, AuditChain, AuditChainLane, AuditEntry

__all__ = [
    "LANES",
    "AuditChain",
    "AuditChainLane",
    "AuditEntry",
    "AuditEntryQuerySet",
    "CallbackRun",
    "CounterDelta",
    "OperationRun",
    "OperationRunQuerySet",
    "Outbox",
    "OutboxQuerySet",
    "StepRun",
    "WorkerHeartbeat",
    "operation_runs_due",
]
