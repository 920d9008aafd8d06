"""The outbox row is written by the change's own statement on PostgreSQL.

``auditq_outbox_put(payload)`` inserts one outbox row and wakes the relay
(``NOTIFY auditq_outbox``). auditq calls it from the ``RETURNING`` clause of a tracked
row's ``INSERT``/``UPDATE``/``DELETE`` in autocommit mode, so the change and its outbox row
commit together in one round trip, and only when the statement really changed a row. Other
databases need no function: auditq writes their outbox rows with a plain ``INSERT``.
"""

import django.utils.timezone
from django.db import migrations, models

CREATE = """
CREATE OR REPLACE FUNCTION auditq_outbox_put(payload text) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO auditq_outbox (created_at, payload) VALUES (now(), payload);
    PERFORM pg_notify('auditq_outbox', '');
    RETURN 1;
END
$$;
"""
DROP = "DROP FUNCTION IF EXISTS auditq_outbox_put(text);"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [("auditq", "0001_initial")]

    operations = [
        # Written on every commit, read only in id order: one index (the key) is enough.
        migrations.AlterField(
            model_name="outbox",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(create, drop, elidable=False, hints={"model_name": "outbox"}),
    ]
