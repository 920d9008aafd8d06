"""``auditq_outbox_put`` notifies only while a relay waits for it.

PostgreSQL serializes the commits of every transaction that sent a ``NOTIFY`` (a global
lock, held until the commit is flushed), so a notification at each commit capped the
whole application's commit rate. A relay about to wait sets the flag: the sequence
``auditq_relay_idle`` with ``is_called`` false (``setval(..., false)``). The first commit
that sees it clears it (``nextval``) and notifies; the others, and every commit while the
relay is busy (it looks again before waiting), send nothing. A sequence because its reads
and writes ignore transactions: the flag is seen at once under any isolation level, and
clearing it takes no row lock that writers could queue on. The flag is read with
``pg_sequence_last_value()`` (``NULL`` while ``is_called`` is false; the function behind
the ``pg_sequences`` view): measured at next to nothing per call, where a
``SELECT is_called FROM auditq_relay_idle`` in the function cost about 6 µs.
"""

from django.db import migrations

CREATE = """
CREATE SEQUENCE IF NOT EXISTS auditq_relay_idle;
CREATE OR REPLACE FUNCTION auditq_outbox_put(payload text, key text DEFAULT '',
                                             notify boolean DEFAULT true)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO auditq_outbox (created_at, payload, key) VALUES (now(), payload, key);
    IF notify AND pg_sequence_last_value('auditq_relay_idle') IS NULL THEN
        PERFORM nextval('auditq_relay_idle');
        PERFORM pg_notify('auditq_outbox', '');
    END IF;
    RETURN 1;
END
$$;
"""
RESTORE = """
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
DROP SEQUENCE IF EXISTS auditq_relay_idle;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RESTORE)


class Migration(migrations.Migration):

    dependencies = [("auditq", "0015_entry_chain")]

    operations = [
        migrations.RunPython(create, restore, elidable=False, hints={"model_name": "outbox"})
    ]
