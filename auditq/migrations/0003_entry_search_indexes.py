"""Indexes for the admin's search of the trail.

- ``auditq_entry_key`` on ``(object_pk, occurred_at)``, on every database: the search by
  exact object key, which has no model to start from.
- On PostgreSQL only, and outside the model state (other databases have no such index):
  pg_trgm GIN indexes on ``UPPER(object_repr)`` and ``UPPER(actor_repr)``. Django's
  ``icontains`` compares ``UPPER(column::text) LIKE UPPER('%term%')``, which they serve
  for terms of three characters or more. The extension is created if the database user
  may (pg_trgm is a trusted extension: from PostgreSQL 13 a user with CREATE on the
  database may); otherwise the migration logs a warning and skips these two indexes, and
  the text search stays a scan. ``docs/admin.md`` has the SQL to run later.

Only workers write the trail, so the lock taken while the indexes build delays
recording, never a request.
"""

import logging

from django.db import DatabaseError, migrations, models, transaction

logger = logging.getLogger("auditq")

TRIGRAM_INDEXES = {"auditq_entry_repr_trgm": "object_repr", "auditq_entry_actor_trgm": "actor_repr"}


def create_trigram_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone() is None:
            try:
                with transaction.atomic(using=connection.alias):
                    cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            except DatabaseError as exc:
                logger.warning(
                    "auditq: could not create the pg_trgm extension (%s); the admin's text "
                    "search of the audit trail will scan the table. See docs/admin.md.",
                    str(exc).strip().splitlines()[0],
                )
                return
    table = schema_editor.quote_name(apps.get_model("auditq", "AuditEntry")._meta.db_table)
    for name, column in TRIGRAM_INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {schema_editor.quote_name(name)} ON {table} "
            f"USING gin (UPPER({schema_editor.quote_name(column)}::text) gin_trgm_ops)"
        )


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in TRIGRAM_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    dependencies = [("auditq", "0002_outbox_put")]

    operations = [
        migrations.AddIndex(
            model_name="auditentry",
            index=models.Index(fields=["object_pk", "occurred_at"], name="auditq_entry_key"),
        ),
        # The hint: where the entries live (auditq.routers.AuditRouter).
        migrations.RunPython(
            create_trigram_indexes,
            drop_trigram_indexes,
            elidable=False,
            hints={"model_name": "auditentry"},
        ),
    ]
