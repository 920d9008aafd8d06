"""Model shapes beyond plain fields, audited: each compared with what the database holds."""

from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import F
from django.db.models.functions import Now
from model_utils.models import SoftDeletableModel

from auditq import audited


@audited
class Sum(models.Model):
    """A generated column: the database computes ``total``, never the save."""

    a = models.IntegerField()
    b = models.IntegerField()
    total = models.GeneratedField(
        expression=F("a") + F("b"), output_field=models.IntegerField(), db_persist=True
    )

    def __str__(self):
        return f"{self.a} + {self.b}"


@audited
class Seat(models.Model):
    """A composite primary key."""

    pk = models.CompositePrimaryKey("row", "number")
    row = models.IntegerField()
    number = models.IntegerField()
    holder = models.CharField(max_length=50, blank=True)

    def __str__(self):
        return f"seat {self.row}-{self.number}"


class Writer(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self):
        return self.name


@audited
class Book(models.Model):
    """A ``__str__`` that follows a foreign key."""

    title = models.CharField(max_length=50)
    writer = models.ForeignKey(Writer, on_delete=models.CASCADE)

    def __str__(self):
        return f"{self.title} by {self.writer.name}"


@audited
class Note(models.Model):
    text = models.CharField(max_length=50)

    def __str__(self):
        return self.text


class Reminder(Note):
    """A proxy of an audited model, itself not decorated."""

    class Meta:
        proxy = True

    def __str__(self):
        return f"reminder: {self.text}"


class Tag(models.Model):
    name = models.CharField(max_length=20)

    def __str__(self):
        return self.name


@audited
class Place(models.Model):
    """A multi-table inheritance parent, with a many-to-many its children use."""

    name = models.CharField(max_length=50)
    tags = models.ManyToManyField(Tag, blank=True)

    def __str__(self):
        return self.name


class Restaurant(Place):
    """A child that is not audited."""

    serves = models.CharField(max_length=50, blank=True)


@audited
class Shop(Place):
    """A child that is audited too."""

    kind = models.CharField(max_length=50, blank=True)


class VisibleLabels(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(is_secret=False)


@audited(unmask=["is_secret"])
class Label(models.Model):
    """A default manager that hides rows: Django's related managers see only the rest.

    ``is_secret`` matches the default ``*secret*`` mask; it is a flag, so it is unmasked.
    """

    name = models.CharField(max_length=20)
    is_secret = models.BooleanField(default=False)

    everything = models.Manager()
    objects = VisibleLabels()

    class Meta:
        default_manager_name = "objects"

    def __str__(self):
        return self.name


@audited
class Folder(models.Model):
    name = models.CharField(max_length=20)
    labels = models.ManyToManyField(Label, blank=True)

    def __str__(self):
        return self.name


@audited
class Blob(models.Model):
    """JSON columns: one with the default encoder, one with Django's."""

    data = models.JSONField(default=dict)
    stamped = models.JSONField(encoder=DjangoJSONEncoder, null=True)

    def __str__(self):
        return f"blob {self.pk}"


@audited
class Outline(models.Model):
    """A tree: a row loaded with its parent carries the same JSON column twice."""

    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    data = models.JSONField(default=dict)

    def __str__(self):
        return f"outline {self.pk}"


# --------------------------------------------------------------------------- delete() overrides


@audited
class Keepsake(SoftDeletableModel):
    """django-model-utils' soft delete: ``delete()`` flags the row and saves it."""

    name = models.CharField(max_length=50)

    def __str__(self):
        return self.name


@audited
class Sealed(models.Model):
    """A ``delete()`` that refuses, as a permission check would."""

    name = models.CharField(max_length=50)

    def __str__(self):
        return self.name

    def delete(self, *args, **kwargs):
        raise PermissionDenied("sealed rows are kept")


@audited
class Attachment(models.Model):
    """A ``delete()`` that deletes the row, then its file."""

    upload = models.FileField(upload_to="attachments/")

    def __str__(self):
        return str(self.upload.name)

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        self.upload.storage.delete(str(self.upload.name))
        return result


@audited
class Stamped(models.Model):
    """A ``save()`` that fills a field before Django writes the row."""

    name = models.CharField(max_length=50)
    slug = models.CharField(max_length=50, blank=True)

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        self.slug = self.name.lower().replace(" ", "-")
        super().save(*args, **kwargs)


@audited
class Counted(models.Model):
    """Columns the database fills: ``db_default`` values, a ``db_default`` key aside."""

    name = models.CharField(max_length=50)
    number = models.IntegerField(db_default=7)
    created = models.DateTimeField(db_default=Now())

    def __str__(self):
        return self.name


@audited(bulk=False)
class Ledger(models.Model):
    """Bulk writes left out of the trail on purpose."""

    name = models.CharField(max_length=50)
    amount = models.IntegerField(default=0)

    def __str__(self):
        return self.name
