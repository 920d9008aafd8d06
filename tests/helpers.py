"""Small helpers the tests share: reading and writing the trail, running commands."""

import datetime
import os
import subprocess
import sys
import uuid

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone

from auditq.models import AuditEntry


def trail(obj) -> list[AuditEntry]:
    """The object's entries, oldest first."""
    return list(AuditEntry.objects.for_object(obj))


def only_entry(obj, action: str) -> AuditEntry:
    """The object's single entry with ``action``; fail if there are none or several."""
    found = [e for e in trail(obj) if e.action == action]
    assert len(found) == 1, [(e.action, e.changes) for e in trail(obj)]
    return found[0]


def entry(obj, action="update", changes=None, at=None, actor=None, **fields) -> AuditEntry:
    """Write an entry directly, as a worker would (no commit needed)."""
    return AuditEntry.objects.create(
        event_id=uuid.uuid4(),
        content_type=ContentType.objects.get_for_model(obj, for_concrete_model=False),
        object_pk=str(obj.pk),
        object_repr=fields.pop("object_repr", str(obj)),
        action=action,
        changes={"title": ["old", "new"]} if changes is None else changes,
        actor=actor,
        actor_repr=fields.pop("actor_repr", str(actor) if actor else ""),
        occurred_at=at or timezone.now(),
        **fields,
    )


def tables_holding(text: str) -> list[str]:
    """The tables of auditq and of Celery's results whose rows hold ``text`` anywhere,
    read with plain SQL (every column, as the database returns it)."""
    found = []
    with connection.cursor() as cursor:
        for label in ("auditq", "django_celery_results"):
            for model in apps.get_app_config(label).get_models():
                table = model._meta.db_table
                cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
                if text in repr(cursor.fetchall()):
                    found.append(table)
    return found


def manage(*arguments: str, test_database: bool = False, **env: str) -> subprocess.CompletedProcess:
    """Run ``manage.py`` with the test settings in a process of its own, as a user would;
    ``test_database``: on this run's test database (committed data only); ``env``: more
    environment variables."""
    from tests.conftest import ROOT

    environment = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT), "PATH": ""}
    if test_database:
        environment["AUDITQ_TEST_WORKER_DB"] = str(connection.settings_dict["NAME"])
        if "DATABASE_URL" in os.environ:
            environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def staff(django_user_model, *perms: str):
    """A staff user with these permissions (codenames) and no others."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(f"u{len(perms)}", password="pw", is_staff=True)
    for perm in perms:
        user.user_permissions.add(Permission.objects.get(codename=perm))
    return user


def assert_retry_all_guarded(django_user_model, url_name: str, *perms: str) -> None:
    """A dashboard "Retry all" needs CSRF and the change permission: a user with only
    ``perms`` sees no button and gets 403 with or without a token."""
    from django.test import Client
    from django.urls import reverse

    viewer = staff(django_user_model, *perms)
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    page = client.get(reverse("admin:auditq_dashboard")).content.decode()
    assert "Retry all" not in page  # no button without the permission
    assert client.post(reverse(url_name)).status_code == 403  # no CSRF token
    token_client = Client()
    token_client.force_login(viewer)
    assert token_client.post(reverse(url_name)).status_code == 403  # no permission


def worker_row(obj, occurred_at: datetime.datetime | None = None, **fields) -> dict:
    """An ``AuditEntry`` row of an update of ``obj`` as the worker builds it (for
    ``auditq.chain.extend`` and the backends' inserts); ``fields`` override columns."""
    return {
        "event_id": uuid.uuid4(),
        "content_type_id": ContentType.objects.get_for_model(obj).pk,
        "object_pk": str(obj.pk),
        "object_repr": str(obj),
        "action": "update",
        "changes": {"title": ["a", "b"]},
        "actor_id": None,
        "actor_repr": "",
        "remote_addr": "127.0.0.1",
        "request_id": "",
        "context": {},
        "occurred_at": occurred_at or timezone.now(),
        **fields,
    }
