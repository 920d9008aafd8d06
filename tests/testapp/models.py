"""Models the tests audit: one per shape of field and option."""

import uuid

from django.conf import settings
from django.db import models

from auditq import audited, counter_cache


class Tag(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self):
        return self.name


@audited
class Document(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=20, default="draft")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="documents")
    data = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return self.title


class Plain(models.Model):
    """The same fields as Document, not audited: the benchmark's and tests' baseline."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=20, default="draft")

    def __str__(self):
        return self.title


@audited(exclude=["updated_at"], mask=["pin"])
class Account(models.Model):
    name = models.CharField(max_length=100)
    pin = models.CharField(max_length=10, blank=True)
    password = models.CharField(max_length=128, blank=True)
    api_token = models.CharField(max_length=100, blank=True)
    client_secret = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.name


@audited(fields=["name"])
class Chosen(models.Model):
    name = models.CharField(max_length=100)
    ignored = models.IntegerField(default=0)

    def __str__(self):
        return self.name


class Status(models.TextChoices):
    DRAFT = "draft"
    LIVE = "live"


@audited
class Everything(models.Model):
    """Every built-in field type that works on SQLite and PostgreSQL."""

    uid = models.UUIDField(default=uuid.uuid4)
    amount = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    ratio = models.FloatField(null=True)
    big = models.BigIntegerField(null=True)
    flag = models.BooleanField(default=False)
    day = models.DateField(null=True)
    moment = models.DateTimeField(null=True)
    clock = models.TimeField(null=True)
    span = models.DurationField(null=True)
    blob = models.BinaryField(null=True)
    doc = models.JSONField(null=True)
    attachment = models.FileField(upload_to="attachments/", blank=True)
    address = models.GenericIPAddressField(null=True)
    email = models.EmailField(blank=True)
    slug = models.SlugField(blank=True)
    url = models.URLField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    owner = models.ForeignKey(Document, null=True, on_delete=models.SET_NULL, related_name="+")
    twin = models.OneToOneField(Tag, null=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self):
        return f"everything {self.pk}"


@audited
class Picture(models.Model):
    """ImageField needs Pillow; its files are recorded by name like any file."""

    image = models.ImageField(upload_to="pictures/", blank=True)

    def __str__(self):
        return self.image.name or "no image"


class Ticket(models.Model):
    """Not audited, but followed by handlers: tracked all the same."""

    subject = models.CharField(max_length=100)
    state = models.CharField(max_length=20, default="open")
    token = models.CharField(max_length=50, blank=True)

    def __str__(self):
        return self.subject


@audited(mask=["combination"])
class Vault(models.Model):
    """Audited, with masked fields, and followed by handlers that read them in clear."""

    label = models.CharField(max_length=50)
    combination = models.CharField(max_length=50, blank=True)
    secret = models.CharField(max_length=50, blank=True)  # masked by the default patterns

    def __str__(self):
        return self.label


class Effect(models.Model):
    """What the test handlers did, where and for which change."""

    handler = models.CharField(max_length=50)
    object_pk = models.CharField(max_length=50)
    event_id = models.UUIDField()
    pid = models.IntegerField()
    seen = models.JSONField(default=dict)

    def __str__(self):
        return f"{self.handler} {self.object_pk}"


class Team(models.Model):
    """A parent whose counter columns auditq keeps (see Player)."""

    name = models.CharField(max_length=50)
    players_count = models.IntegerField(default=0)
    active_count = models.PositiveIntegerField(default=0)
    points_total = models.DecimalField(max_digits=12, decimal_places=2, default=0)

    def __str__(self):
        return self.name


@counter_cache("team", field="players_count")
@counter_cache("team", field="active_count", when=lambda p: p.active)
@counter_cache("team", field="points_total", sum="points", when=lambda p: p.active)
class Player(models.Model):
    """Counted on its team, not audited: tracked all the same."""

    name = models.CharField(max_length=50)
    team = models.ForeignKey(Team, null=True, on_delete=models.CASCADE, related_name="players")
    points = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    active = models.BooleanField(default=True)

    def __str__(self):
        return self.name


class Captain(Player):
    """A multi-table child of a counted model: its rows count on the team too."""

    armband = models.CharField(max_length=20, blank=True)
