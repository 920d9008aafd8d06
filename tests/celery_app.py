"""The Celery app of the test suite (``celery -A tests.celery_app worker``).

It is the example project's app, configured from ``tests.settings``: the tests install
the example's fundraising app, whose package loads that app with Django (as a project's
``__init__.py`` does), and one process should have one current Celery app.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from example_project.celery import app

__all__ = ["app"]

# Test hook for "worker killed mid-batch": when AUDITQ_TEST_STALL_FILE is set, the worker
# stops forever just before a statement (AUDITQ_TEST_STALL_ON: "VERB table", by default
# inserting audit entries, also as a statement's first part: "WITH new AS (INSERT ...") inside
# its transaction (the relay thread's or a task's), after creating that file so that the
# test knows when to kill it.
if os.environ.get("AUDITQ_TEST_STALL_FILE"):
    import time
    from pathlib import Path

    from django.db.backends.signals import connection_created

    _verb, _table = os.environ.get("AUDITQ_TEST_STALL_ON", "INSERT auditq_auditentry").split()

    def _stall(execute, sql, params, many, context):
        if (sql.startswith(_verb) or f"AS ({_verb} " in sql) and _table in sql:
            Path(os.environ["AUDITQ_TEST_STALL_FILE"]).touch()
            time.sleep(3600)
        return execute(sql, params, many, context)

    def _install_stall(connection, **kwargs):
        if _stall not in connection.execute_wrappers:
            connection.execute_wrappers.append(_stall)

    connection_created.connect(_install_stall, weak=False)

# Test hook for "every message published three times": when AUDITQ_TEST_PUBLISH_TIMES is
# set, every message this process publishes (deliveries, handler runs, counter flushes,
# operation steps) is sent that many times.
if os.environ.get("AUDITQ_TEST_PUBLISH_TIMES"):
    from kombu import messaging

    _times = int(os.environ["AUDITQ_TEST_PUBLISH_TIMES"])
    _publish = messaging.Producer.publish

    def _publish_repeatedly(self, body, *args, **kwargs):
        for _ in range(_times - 1):
            _publish(self, body, *args, **kwargs)
        return _publish(self, body, *args, **kwargs)

    messaging.Producer.publish = _publish_repeatedly  # type: ignore[method-assign]

# Test hook for "masked values appear in no message": when AUDITQ_TEST_PUBLISH_LOG names a
# file, every message this process publishes is appended to it (headers and body).
if os.environ.get("AUDITQ_TEST_PUBLISH_LOG"):
    from kombu import messaging as _messaging

    _log_path = os.environ["AUDITQ_TEST_PUBLISH_LOG"]
    _publish_once = _messaging.Producer.publish

    def _publish_logged(self, body, *args, **kwargs):
        with open(_log_path, "a") as log:
            log.write(f"{kwargs.get('headers')!r} {body!r}\n")
        return _publish_once(self, body, *args, **kwargs)

    _messaging.Producer.publish = _publish_logged  # type: ignore[method-assign]
