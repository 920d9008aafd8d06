"""``PlainRow`` and ``AuditedRow``: the same eight fields, only the second is ``@audited``."""

from django.db import models

from auditq import audited


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
class AuditedRow(Row):
    """Audited: every create, update and delete goes through auditq's request path."""
