"""With ``AUDITQ["PARTITION"]`` set on PostgreSQL, a new (empty) trail is created
partitioned: the table migration 0001 made is converted at once (``auditq.partitions``).
A table that already holds entries is left alone, with a warning: convert it with
``manage.py auditq_partition``, which copies the rows in batches without a long lock.
Other databases, and ``PARTITION`` unset: nothing. Reversing leaves the table as it is.
"""

import logging

from django.conf import settings
from django.db import migrations

logger = logging.getLogger("auditq")


def partition_new_trail(apps, schema_editor):
    connection = schema_editor.connection
    period = getattr(settings, "AUDITQ", {}).get("PARTITION")
    if connection.vendor != "postgresql" or period is None:
        return
    from auditq import partitions

    if partitions.is_partitioned(connection.alias):
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {partitions.TABLE})")
        if cursor.fetchone()[0]:
            logger.warning(
                "auditq: AUDITQ['PARTITION'] is %r but the audit trail already holds "
                "entries: run manage.py auditq_partition to convert it.",
                period,
            )
            return
    partitions.convert(period, connection.alias, keep_old=False)


class Migration(migrations.Migration):
    dependencies = [("auditq", "0017_chain_lanes")]

    operations = [
        migrations.RunPython(
            partition_new_trail,
            migrations.RunPython.noop,
            elidable=False,
            hints={"model_name": "auditentry"},
        )
    ]
