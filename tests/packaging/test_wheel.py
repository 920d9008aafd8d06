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
repository on ``sys.path``. If pip cannot reach the package index the tests skip, or fail
with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import email.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.conftest import ROOT, RedisServer, missing

pytestmark = pytest.mark.integration

# pip's output when the index cannot be reached (as opposed to a dependency that is wrong).
NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Could not fetch URL",
)
# Variables of this test run that must not leak into the new user's project.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV")
LEAKY_ENV_PREFIXES = ("DJANGO_", "AUDITQ_", "CELERY_", "PYTEST_", "DATABASE_URL", "REDIS_URL")
BROKER_DB = 7  # a Redis database of its own: other tests flush and use database 0
WORKER_NAME = "auditq-packaging@localhost"


def pip(*args: str, what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the test environment's pip; skip (fail under CI) when the index is unreachable."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"pip did not {what} within {timeout}s:\n{exc.output}", pytrace=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        network = [line for line in output.splitlines() if any(e in line for e in NETWORK_ERRORS)]
        if network:
            missing(f"pip cannot reach the package index to {what}: {network[-1].strip()}")
        pytest.fail(f"pip could not {what} (exit {result.returncode}):\n{output}", pytrace=False)
    return result


@dataclass
class Built:
    wheel: Path
    source: Path  # the copy of the checkout the wheel was built from


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.is_file():  # a tracked file deleted in the work tree is not there
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "-w", str(dist), str(source), what="build the wheel", timeout=600)
    wheels = list(dist.glob("auditq-*.whl"))
    assert len(wheels) == 1, f"expected one auditq wheel, got {sorted(os.listdir(dist))}"
    return Built(wheels[0], source)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory) -> Path:
    """A fresh venv with the wheel (and its ``postgres`` extra) and nothing else installed.

    Created without pip of its own (faster) and filled by this environment's pip.
    """
    venv = tmp_path_factory.mktemp("venv")
    assert not venv.is_relative_to(ROOT)
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    pip(
        "--python",
        str(venv / "bin" / "python"),
        "install",
        f"{built.wheel}[postgres]",
        what="install the wheel and its dependencies",
        timeout=900,
    )
    return venv


def files(root: Path, spec: dict[str, str]) -> None:
    for name, text in spec.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())


@dataclass
class Project:
    root: Path
    venv: Path
    broker_url: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "python"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def manage(self, *args: str) -> str:
        """``manage.py`` with these arguments must succeed; return its stdout."""
        result = self.run("manage.py", *args)
        assert result.returncode == 0, (
            f"manage.py {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def shell(self, code: str) -> str:
        """Run ``code`` in ``manage.py shell``; return the last line it printed."""
        lines = self.manage("shell", "-c", textwrap.dedent(code)).strip().splitlines()
        return lines[-1] if lines else ""


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
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in LEAKY_ENV and not key.startswith(LEAKY_ENV_PREFIXES)
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    project = Project(root, venv, broker_url, env)
    project.manage("makemigrations", "shop")
    project.manage("migrate", "-v", "0")
    return project


@pytest.fixture
def broker(redis_server: RedisServer, project: Project) -> str:
    """The private Redis, running (another test may have stopped it), database emptied.

    Started again only when its process is gone: a second redis-server started beside a
    slow one would fail to bind, and the first would outlive the session.
    """
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    assert poll(redis_server.ping, timeout=20), "the private redis-server does not answer"
    redis.Redis.from_url(project.broker_url).flushdb()
    return project.broker_url


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


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the worker's process group (warm shutdown), then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def poll(predicate, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


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
