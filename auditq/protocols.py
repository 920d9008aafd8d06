"""The seams other code plugs into: a consumer of the change stream, a sweeper the relay
calls, a runner for eager mode. Registered through :mod:`auditq.registry`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from django.db.models import Model

if TYPE_CHECKING:
    from auditq.stream.context import AuditContext
    from auditq.stream.events import Event


class Consumer(Protocol):
    """One consumer of the change stream (audit entries, callbacks, counters, ...).

    A consumer says which models it tracks, picks on the request path what it wants
    from each change (in memory, no I/O), and records what it asked for in the worker.
    Adding a consumer touches no other consumer: capture asks each one in turn and the
    worker hands each one only the events it asked for.
    """

    name: str
    """The consumer's key in ``Change.consumers``: short and stable (it is stored)."""

    def models(self) -> Iterable[type[Model]]:
        """The models whose changes this consumer wants (they become tracked)."""

    def capture(
        self,
        model: type[Model],
        instance: Model | None,
        action: str,
        changes: Mapping[str, Any],
        context: AuditContext,
        loaded: Mapping[str, Any],
    ) -> Any:
        """Return JSON-safe data to carry with this change, or ``None`` to skip it.

        Runs on the request path for every change of a tracked model: no queries.
        ``model`` is the model the change is recorded under: the concrete model of a
        proxy, and, for a multi-table child's save, each tracked ancestor in turn (its
        row changed too) as well as the child. ``instance`` is the object saved (a child
        is an instance of its ancestors), ``None`` for many-to-many changes seen from the
        other side. ``loaded`` is what the database held before the change, by attname
        (the snapshot taken at load; empty for a create): the old state, in memory.
        """

    def squash(self, earlier: Any, later: Any, action: str, changes: Mapping[str, Any]) -> Any:
        """Fold what this consumer asked of two changes of one object in one transaction
        (``AUDITQ["SQUASH"]``) into what it wants of the folded change (``action`` and
        ``changes``); ``None`` to skip it. ``earlier`` or ``later`` is ``None`` when it
        did not want that change. Runs at commit, on the request path: no queries.
        """

    def record(self, events: Sequence[Event], using: str) -> None:
        """Apply ``events`` inside the worker's transaction that consumes their outbox rows.

        Runs once per delivery of the rows; the transaction commits with the rows'
        removal, so a redelivered message finds nothing left to do.
        """


class Sweeper(Protocol):
    """Work a consumer keeps of its own to publish (callback retries, operation steps
    coming due): the relay calls every sweeper at each round."""

    def __call__(self, using: str, app: Any, connection: Any, /) -> int:
        """Publish what is due in database ``using`` with the Celery ``app`` (reusing the
        broker ``connection``, if given); return how many tasks were sent."""


class Runner(Protocol):
    """What runs one ledger row's task in this process, as the worker would: how rows
    are run when Celery runs tasks eagerly (``task_always_eager``: tests, scripts)."""

    def __call__(self, row_id: int, using: str, /) -> str:
        """Run the row's work; return its status."""
