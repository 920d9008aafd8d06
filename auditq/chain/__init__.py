"""The tamper-evident trail: every recorded entry carries a SHA-256 hash over its content
and the hash before it in its model's chain (:mod:`~auditq.chain.canonical`); the
recording worker extends the chains (:mod:`~auditq.chain.extend`), ``auditq_verify``
recomputes them (:mod:`~auditq.chain.verify`), and pruning leaves an anchor."""

from auditq.chain.extend import extend

__all__ = ["extend"]
