"""The trail (``AuditEntry``) and its hash chains (``AuditChain``, ``AuditChainLane``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone

from auditq.diffs import DiffRow, diff_rows, title
from auditq.history import AuditEntryQuerySet
from auditq.revert import revert
from auditq.stream.events import REPR_LIMIT, m2m_keys


class AuditEntry(models.Model):
    """One create, update or delete of an audited object, written by a worker."""

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, editable=False)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_pk = models.CharField(max_length=255)
    object_repr = models.CharField(max_length=REPR_LIMIT, blank=True)
    action = models.CharField(max_length=6, choices=Action.choices)
    changes = models.JSONField(default=dict)
    # No database constraint and no cascade: deleting a user must neither delete nor
    # rewrite the trail; actor_id keeps the key and actor_repr the name.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_repr = models.CharField(max_length=255, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=200, blank=True)
    context = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    # db_default: rows inserted without it (chaining off) are unchained, "".
    chain_hash = models.CharField(
        max_length=64,
        blank=True,
        db_default="",
        editable=False,
        help_text="SHA-256 (hex) over this entry and the hash before it in its model's "
        "chain; empty on entries recorded before chaining or with AUDITQ['CHAIN'] off.",
    )
    chain_lane = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        editable=False,
        help_text="Which of its model's chains (lanes) the entry is in.",
    )

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        ordering = ("-occurred_at", "-id")
        indexes = (
            models.Index(
                fields=["content_type", "object_pk", "occurred_at"], name="auditq_entry_object"
            ),
            models.Index(fields=["content_type", "occurred_at"], name="auditq_entry_model"),
            models.Index(fields=["actor", "occurred_at"], name="auditq_entry_actor"),
            models.Index(fields=["occurred_at"], name="auditq_entry_time"),
            # The admin's exact object-key search, which has no model to start from.
            models.Index(fields=["object_pk", "occurred_at"], name="auditq_entry_key"),
        )

    def __str__(self) -> str:
        content_type = self.content_type
        return f"{self.action} {content_type.app_label}.{content_type.model} {self.object_pk}"

    @property
    def changed_fields(self) -> list[str]:
        """The names of the fields this entry changed."""
        return list(self.changes)

    @property
    def summary(self) -> str:
        """What happened, as a person says it: ``"Donation #53 changed by admin"``."""

        return title(self)

    def get_diff_display(self) -> list[DiffRow]:
        """Return the changes as rows a person reads: verbose field names, choice labels,
        and related objects' names (one query per related model)."""

        return diff_rows(self)

    def revert(self) -> models.Model:
        """Put back the values this ``update`` replaced (or restore the row this
        ``delete`` removed) as a new, audited change whose ``context["reverted"]`` is this
        entry's id; return the object.

        Raises:
            auditq.RevertConflict: a field changed since, or a value it needs (masked,
                kept as a repr) was never kept; ``conflict.fields`` names them.
            ValueError: a create (delete the object instead), or a model that is gone.
        """
        return revert(self)

    def get_changes_display(self) -> list[tuple[str, Any, Any]]:
        """Return ``(field, old, new)`` rows; many-to-many rows hold removed and added keys."""
        rows = []
        for name, change in self.changes.items():
            m2m = m2m_keys(change)
            if m2m is not None:
                rows.append((name, *m2m))
            else:
                rows.append((name, change[0], change[1]))
        return rows


class AuditChain(models.Model):
    """One model's trail: its last verification. The trail is woven of up to
    :data:`LANES` hash chains (:class:`AuditChainLane`), so that concurrent workers record
    one model's entries side by side."""

    content_type = models.OneToOneField(
        ContentType, on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_entries = models.BigIntegerField(default=0)
    unchained_entries = models.BigIntegerField(
        default=0, help_text="Entries recorded before the chain started, at the last check."
    )
    broken_entry_id = models.BigIntegerField(
        null=True, blank=True, help_text="The first entry where the last check found a break."
    )
    problem = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "audit chain"

    def __str__(self) -> str:
        content_type = self.content_type
        return f"chain of {content_type.app_label}.{content_type.model}"

    @property
    def intact(self) -> bool | None:
        """The last verification's verdict; ``None`` before the first."""
        return None if self.verified_at is None else self.broken_entry_id is None


LANES = 8
"""The chains (lanes) of one model: a recording transaction locks one lane of each of its
models, a free one if any, so up to this many record one model at once."""


class AuditChainLane(models.Model):
    """One of a model's hash chains: its head (what the next entry links to) and its prune
    anchor. The recording worker locks the row while it extends the lane, so the lane's
    entries are in key order."""

    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    lane = models.PositiveSmallIntegerField()
    last_hash = models.CharField(max_length=64, blank=True, default="")
    last_entry_id = models.BigIntegerField(null=True, blank=True)
    anchor_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="The last pruned entry's hash."
    )
    anchor_entry_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "audit chain lane"
        constraints = (
            models.UniqueConstraint(fields=["content_type", "lane"], name="auditq_chain_lane"),
        )

    def __str__(self) -> str:
        content_type = self.content_type
        return f"lane {self.lane} of {content_type.app_label}.{content_type.model}"
