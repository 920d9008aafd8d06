"""Deprecated path: ``auditq.relay`` moved to ``auditq.delivery.relay``."""

from auditq.deprecations import moved

__getattr__ = moved("auditq.relay", "auditq.delivery.relay")
