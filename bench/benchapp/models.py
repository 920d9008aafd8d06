"""One model per contender, each with the same eight fields.

``PlainRow`` is not audited (the baseline) and ``AuditqRow`` is ``@audited``. The models
of the other libraries exist only when the library's app is in ``INSTALLED_APPS``, so a
project without them (the worker bench, SQLite without pghistory) still loads this app.

The counter-cache bench (``counters.py``) has its own: ``CountedChild`` keeps
``CounterParent.children`` with ``@counter_cache``, ``PlainChild`` is its uncounted twin,
and ``SyncChild``'s parent is kept by the request itself, with an ``F()`` update.
"""

from django.conf import settings
from django.db import models

from auditq import after_delete, after_save, audited, counter_cache


class Owner(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Row(models.Model):
    title = models.CharField(max_length=100)
    body = models.TextField()
    count = models.IntegerField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    active = models.BooleanField(default=True)
    happened_at = models.DateTimeField()
    owner = models.ForeignKey(Owner, on_delete=models.CASCADE, related_name="+")
    data = models.JSONField(default=dict)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.title


class PlainRow(Row):
    """Not audited: the baseline."""


@audited
class AuditqRow(Row):
    """auditq: captured in memory, one outbox row per transaction, recorded by a worker."""


@audited
class AuditqHandlerRow(Row):
    """auditq with a handler too (``@after_save``, ``@after_delete``): one event, two
    consumers."""


class HandlerRow(Row):
    """Not audited, with handlers: tracked for the handlers alone."""


class Parent(models.Model):
    name = models.CharField(max_length=50)
    children = models.IntegerField(default=0)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name


class CounterParent(Parent):
    """``children`` is kept by auditq's workers (``@counter_cache`` on ``CountedChild``)."""


class SyncParent(Parent):
    """``children`` is kept by the request: ``update(children=F("children") + 1)``."""


@counter_cache("parent", field="children")
class CountedChild(Row):
    """Counted: the request computes the delta, a worker applies it, coalesced."""

    parent = models.ForeignKey(CounterParent, on_delete=models.CASCADE, related_name="+")


class PlainChild(Row):
    """``CountedChild`` without the counter: the baseline."""

    parent = models.ForeignKey(CounterParent, on_delete=models.CASCADE, related_name="+")


class SyncChild(Row):
    """Not tracked; the bench updates its parent's count in the same transaction."""

    parent = models.ForeignKey(SyncParent, on_delete=models.CASCADE, related_name="+")


@after_save(AuditqHandlerRow, when=lambda row: row.active is not None)
def audited_row_saved(row: AuditqHandlerRow, event: object) -> None:
    """Never runs here (no worker): the bench measures the request path."""


@after_save(HandlerRow, when=lambda row: row.active is not None)
def row_saved(row: HandlerRow, event: object) -> None:
    """Never runs here (no worker): the bench measures the request path."""


@after_delete(AuditqHandlerRow)
def audited_row_deleted(event: object) -> None:
    """Never runs here (no worker)."""


@after_delete(HandlerRow)
def row_deleted(event: object) -> None:
    """Never runs here (no worker)."""


if "auditlog" in settings.INSTALLED_APPS:
    from auditlog.registry import auditlog

    class AuditlogRow(Row):
        """django-auditlog: a ``LogEntry`` written by signal handlers, in the request."""

    auditlog.register(AuditlogRow)


if "simple_history" in settings.INSTALLED_APPS:
    from simple_history.models import HistoricalRecords

    class SimpleHistoryRow(Row):
        """django-simple-history: a historical copy of the row per change, in the request."""

        history = HistoricalRecords()


if "pghistory" in settings.INSTALLED_APPS:
    import pghistory

    # pghistory tracks inserts and updates by default; the others record deletes too.
    @pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent())
    class PghistoryRow(Row):
        """django-pghistory: an event row per change, written by PostgreSQL triggers."""
