"""The exceptions users catch, importable from ``auditq`` without loading any model."""


class HistoryIncomplete(LookupError):
    """The trail does not reach back to the object's creation (pruned, or recorded only
    since auditing began): no answer is better than a wrong one."""
