"""Deprecated path: ``auditq.sealing`` moved to ``auditq.stream.sealing``."""

from auditq.deprecations import moved

__getattr__ = moved("auditq.sealing", "auditq.stream.sealing")
