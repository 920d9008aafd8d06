"""Deprecated path: ``auditq.events`` moved to ``auditq.stream.events``."""

from auditq.deprecations import moved

__getattr__ = moved("auditq.events", "auditq.stream.events")
