"""``auditq_outbox_put`` takes whether to ``NOTIFY`` (``AUDITQ["NOTIFY"]``).

PostgreSQL serializes the commits of every transaction that sent a ``NOTIFY`` (a global
lock, held until the commit is flushed): a project with many concurrent writers may turn
the notification off and let the relay poll instead. Calls without the argument notify,
as before.
"""

from django.db import migrations

CREATE = """
DROP FUNCTION IF EXISTS auditq_outbox_put(text, text);
CREATE OR REPLACE FUNCTION auditq_outbox_put(payload text, key text DEFAULT '',
                                             notify boolean DEFAULT true)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO auditq_outbox (created_at, payload, key) VALUES (now(), payload, key);
    IF notify THEN
        PERFORM pg_notify('auditq_outbox', '');
    END IF;
    RETURN 1;
END
$$;
"""
RESTORE = """
DROP FUNCTION IF EXISTS auditq_outbox_put(text, text, boolean);
CREATE OR REPLACE FUNCTION auditq_outbox_put(payload text, key text DEFAULT '')
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO auditq_outbox (created_at, payload, key) VALUES (now(), payload, key);
    PERFORM pg_notify('auditq_outbox', '');
    RETURN 1;
END
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RESTORE)


class Migration(migrations.Migration):

    dependencies = [("auditq", "0008_outbox_key")]

    operations = [
        migrations.RunPython(create, restore, elidable=False, hints={"model_name": "outbox"})
    ]
