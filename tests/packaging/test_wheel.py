"""What a new user gets from ``pip install auditq``: the built wheel alone runs a project.

1. The wheel is built from a copy of the checkout (the files git tracks or does not ignore,
   so nothing is written into the shared checkout) and must hold every file of the
   ``auditq`` package (migrations, templates, ``py.typed``, static files if any) and no tests.
2. A fresh venv outside the repository gets the wheel and its dependencies from the package
   index (pip's cache is reused).
3. A minimal Django project written here (``"auditq"`` appended last to ``INSTALLED_APPS``,
   SQLite, the private Redis of ``redis_server``) is migrated and checked, a real
   ``celery worker`` is started from the venv, and a save made in another process of the
   venv must become an ``AuditEntry``: the worker's relay thread publishes the outbox row,
   its ``deliver`` task records it.
4. ``auditq_relay --older-than nan`` exits 2 with one line, no usage block and no
   traceback, as the README says.

Every command runs with the venv's python, in the project's directory, without the
repository on ``sys.path``. The wheel and the venv (steps 1 and 2) are ``conftest.py``'s,
shared with ``test_readme.py``. If pip cannot reach the package index the tests skip, or
fail with ``CI=true``.
"""

from __future__ import annotations

import email.parser
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.conftest import ROOT, RedisServer
from tests.packaging.conftest import (
    Built,
    Project,
    files,
    fresh_broker,
    poll,
    project_env,
    stop_group,
)

pytestmark = pytest.mark.integration

BROKER_DB = 7  # a Redis database of its own: other tests flush and use database 0
WORKER_NAME = "auditq-packaging@localhost"


@pytest.fixture(scope="module")
def project(venv: Path, redis_server: RedisServer, tmp_path_factory) -> Project:
    """A new user's minimal project, as the README's Install section says, migrated."""
    root = tmp_path_factory.mktemp("project")
    assert not root.is_relative_to(ROOT)
    broker_url = f"redis://127.0.0.1:{redis_server.port}/{BROKER_DB}"
    files(
        root,
        {
            "manage.py": """
                #!/usr/bin/env python
                import os
                import sys

                if __name__ == "__main__":
                    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
                    from django.core.management import execute_from_command_line

                    execute_from_command_line(sys.argv)
            """,
            "proj/__init__.py": """
                from .celery import app as celery_app

                __all__ = ("celery_app",)
            """,
            "proj/celery.py": """
                import os

                from celery import Celery

                os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
                app = Celery("proj")
                app.config_from_object("django.conf:settings", namespace="CELERY")
                app.autodiscover_tasks()
            """,
            "proj/settings.py": f"""
                from pathlib import Path

                BASE_DIR = Path(__file__).resolve().parent.parent
                SECRET_KEY = "packaging-test"
                DEBUG = False
                USE_TZ = True
                DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
                INSTALLED_APPS = [
                    "django.contrib.contenttypes",
                    "django.contrib.auth",
                    "django_celery_results",
                    "shop",
                ]
                INSTALLED_APPS += ["auditq"]
                DATABASES = {{
                    "default": {{
                        "ENGINE": "django.db.backends.sqlite3",
                        "NAME": BASE_DIR / "db.sqlite3",
                        "OPTIONS": {{"transaction_mode": "IMMEDIATE", "timeout": 20}},
                    }}
                }}
                CELERY_BROKER_URL = {broker_url!r}
                CELERY_TASK_SERIALIZER = "json"
                CELERY_ACCEPT_CONTENT = ["json"]
                CELERY_RESULT_BACKEND = "django-db"
                CELERY_RESULT_EXTENDED = True
                CELERY_TASK_ACKS_LATE = True
                CELERY_WORKER_PREFETCH_MULTIPLIER = 1
            """,
            "shop/__init__.py": "",
            "shop/models.py": """
                from django.db import models

                from auditq import audited


                @audited
                class Item(models.Model):
                    name = models.CharField(max_length=100)

                    def __str__(self):
                        return self.name
            """,
        },
    )
    env = project_env(venv)
    project = Project(root, venv, broker_url, env)
    project.manage("makemigrations", "shop")
    project.manage("migrate", "-v", "0")
    return project


@pytest.fixture
def broker(redis_server: RedisServer, project: Project) -> str:
    """The private Redis, running, this module's database emptied."""
    return fresh_broker(redis_server, project.broker_url)


@pytest.fixture
def worker(project: Project, broker: str, tmp_path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """``celery -A proj worker`` started from the venv, in its own process group."""
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(project.venv / "bin" / "celery"),
                "-A",
                "proj",
                "worker",
                "-P",
                "solo",
                "-l",
                "INFO",
                "-n",
                WORKER_NAME,
            ],
            cwd=project.root,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, log
    finally:
        stop_group(process)


def test_wheel_holds_the_package_files_and_no_tests(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())

    package = built.source / "auditq"
    expected = {
        path.relative_to(built.source).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert not expected - names, f"files of auditq/ missing from the wheel: {expected - names}"
    assert "auditq/py.typed" in names
    assert "auditq/migrations/__init__.py" in names
    assert "auditq/migrations/0001_initial.py" in names
    assert any(n.startswith("auditq/templates/admin/") and n.endswith(".html") for n in names)
    assert any(n.startswith("auditq/templates/auditq/") and n.endswith(".html") for n in names)
    assert "auditq/management/commands/auditq_relay.py" in names
    static = {n for n in expected if n.startswith("auditq/static/")}
    assert static <= names  # none today; when there are some they must ship

    top_level = {n.split("/")[0] for n in names}
    assert top_level == {"auditq", f"auditq-{metadata['Version']}.dist-info"}, top_level
    tests = [
        n
        for n in names
        if "tests" in n.split("/") or n.split("/")[-1].startswith(("test_", "conftest"))
    ]
    assert not tests, f"the wheel ships tests: {tests}"

    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.replace(" ", "").startswith("celery[redis]") for r in requires), requires


def test_installed_wheel_records_a_save_through_a_real_worker(project: Project, worker) -> None:
    process, log = worker
    where = json.loads(
        project.shell(
            """
            import json, sys
            import auditq, celery, kombu.transport.redis, psycopg
            print(json.dumps({"auditq": auditq.__file__, "path": sys.path}))
            """
        )
    )
    assert Path(where["auditq"]).is_relative_to(project.venv), where["auditq"]
    assert not [p for p in where["path"] if p and Path(p).resolve().is_relative_to(ROOT)], where

    checked = project.run("manage.py", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ERRORS:" not in checked.stderr, checked.stderr
    pending = project.run("manage.py", "makemigrations", "--check", "--dry-run")
    assert pending.returncode == 0, f"models without migrations:\n{pending.stdout}"

    app = Celery(broker=project.broker_url, set_as_current=False)
    try:

        def answers() -> bool:
            try:
                return bool(app.control.ping(destination=[WORKER_NAME], timeout=0.5))
            except Exception:  # the worker's queues are not there yet: ask again
                return False

        ready = poll(lambda: answers() or process.poll() is not None, timeout=60)
    finally:
        app.close()
    assert ready and process.poll() is None, f"the worker did not start:\n{log.read_text()}"
    assert ". auditq.tasks.deliver" in log.read_text(), log.read_text()  # autodiscovered

    pk = int(
        project.shell(
            """
            from shop.models import Item
            print(Item.objects.create(name="first").pk)
            """
        )
    )

    def entries() -> list:
        return json.loads(
            project.shell(
                f"""
                import json
                from auditq.models import AuditEntry
                from shop.models import Item
                entries = AuditEntry.objects.for_object(Item.objects.get(pk={pk}))
                print(json.dumps([[e.action, e.changes] for e in entries]))
                """
            )
        )

    recorded = poll(entries, timeout=60, interval=0.5)
    assert recorded, f"no AuditEntry after 60s; the worker's log:\n{log.read_text()}"
    assert recorded == [["create", {"id": [None, pk], "name": [None, "first"]}]], recorded
    assert "Traceback" not in log.read_text(), log.read_text()


def test_relay_rejects_nan_without_a_traceback(project: Project) -> None:
    result = project.run("manage.py", "auditq_relay", "--older-than", "nan")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "manage.py auditq_relay: error: argument --older-than: "
        "'nan' must be a finite number of seconds, from 0 to ten years"
    ), result.stderr


def test_relay_rejects_nan_in_one_line(project: Project) -> None:
    result = project.run("manage.py", "auditq_relay", "--older-than", "nan")

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
