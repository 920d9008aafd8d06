"""Models the PostgreSQL pass audits: the field types only PostgreSQL has.

Installed only when the tests run on PostgreSQL (see ``tests/settings.py``).
"""

from django.contrib.postgres.fields import (
    ArrayField,
    DateTimeRangeField,
    DecimalRangeField,
    IntegerRangeField,
)
from django.contrib.postgres.functions import RandomUUID
from django.db import models

from auditq import audited


@audited
class PgEverything(models.Model):
    """Arrays and ranges, each nullable so a test sets only what it checks."""

    name = models.CharField(max_length=50, blank=True)
    numbers = ArrayField(models.IntegerField(), default=list, blank=True)
    tags = ArrayField(models.CharField(max_length=20), default=list, blank=True)
    ages = IntegerRangeField(null=True, blank=True)
    window = DateTimeRangeField(null=True, blank=True)
    prices = DecimalRangeField(null=True, blank=True)

    def __str__(self):
        return self.name or f"pg everything {self.pk}"


@audited
class PgServerKeyed(models.Model):
    """Its key is drawn by the database (``gen_random_uuid()``), not by Django."""

    id = models.UUIDField(primary_key=True, db_default=RandomUUID())
    name = models.CharField(max_length=50)

    def __str__(self):
        return f"{self.name} ({self.pk})"
