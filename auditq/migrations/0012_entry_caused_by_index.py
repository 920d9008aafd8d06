"""On PostgreSQL, a partial expression index on ``context -> 'caused_by'``.

An entry's admin page lists the entries that the change's handlers made
(``AuditEntry.objects.filter(context__caused_by=...)``, which PostgreSQL compiles to
``(context -> 'caused_by') = '"<event id>"'::jsonb``). Without an index that is a scan of
the trail; this one holds only the entries made by handlers, so it stays small. Outside
the model state, like migration 0003's: other databases have no such index (SQLite scans).
"""

from django.db import migrations

INDEX = "auditq_entry_caused_by"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("auditq", "AuditEntry")._meta.db_table)
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {schema_editor.quote_name(INDEX)} ON {table} "
        "((context -> 'caused_by')) WHERE (context -> 'caused_by') IS NOT NULL"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(INDEX)}")


class Migration(migrations.Migration):
    dependencies = [("auditq", "0011_outbox_set_aside")]

    operations = [
        migrations.RunPython(
            create_index, drop_index, elidable=False, hints={"model_name": "auditentry"}
        )
    ]
