"""The exceptions users catch, importable from ``auditq`` without loading any model."""


class HistoryIncomplete(LookupError):
    """The trail does not reach back to the object's creation (pruned, or recorded only
    since auditing began): no answer is better than a wrong one."""


class RevertConflict(Exception):
    """An entry cannot be reverted: a field changed since, or a value it needs was never
    kept. ``fields`` names them."""

    def __init__(self, entry: object, fields: list[str], why: str) -> None:
        self.entry = entry
        self.fields = fields
        named = f" ({', '.join(fields)})" if fields else ""
        super().__init__(f"cannot revert {entry}{named}: {why}.")
