"""The README's quick start, as written, makes a project that records a change.

The quick start's code blocks are marked in README.md with HTML comments (invisible on
GitHub and PyPI): ``<!-- quickstart: ACTION [PATH] -->`` before each block.

- ``install``: ``pip install auditq``; here the venv holds the wheel built from this
  checkout (the fixtures of ``conftest.py``, shared with ``test_wheel.py``);
- ``append PATH`` / ``write PATH``: the block goes at the end of, or becomes, that file;
- ``run``: the commands, in order (a ``celery ... worker`` is started and kept running);
- ``change``: the command that makes a change, which must become an ``AuditEntry``.

The project is what the quick start assumes: ``django-admin startproject proj .`` and an
app ``shop`` in ``INSTALLED_APPS``. The one change to the README's text is the broker's
URL: the tests' private Redis instead of the default one on port 6379.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, RedisServer
from tests.packaging.conftest import Project, fresh_broker, poll, project_env, stop_group

BROKER_DB = 8  # a Redis database of its own (test_wheel.py uses 7)
MARKED = re.compile(
    r"<!-- quickstart: (?P<action>\w+)(?: (?P<path>\S+))? -->\n"
    r"```(?P<lang>\w+)\n(?P<body>.*?)```",
    re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    action: str
    path: str | None
    body: str

    def commands(self) -> list[list[str]]:
        """The ``$ `` lines of a console block, as argument lists (comments dropped)."""
        return [
            shlex.split(line[2:], comments=True)
            for line in self.body.splitlines()
            if line.startswith("$ ")
        ]


def quick_start() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    return [Block(m["action"], m["path"], m["body"]) for m in MARKED.finditer(text)]


def test_the_quick_start_has_every_step():
    blocks = quick_start()
    steps = [(b.action, b.path) for b in blocks]

    assert steps == [
        ("install", None),
        ("append", "proj/settings.py"),
        ("write", "proj/celery.py"),
        ("write", "proj/__init__.py"),
        ("write", "shop/models.py"),
        ("run", None),
        ("change", None),
    ]
    install, settings, celery, *_, run, _ = blocks
    assert install.commands() == [["pip", "install", "auditq"]]
    for name in ("CELERY_BROKER_URL", "CELERY_TASK_SERIALIZER", "CELERY_ACCEPT_CONTENT"):
        assert name in settings.body
    assert 'app.config_from_object("django.conf:settings", namespace="CELERY")' in celery.body
    assert [c[:3] for c in run.commands()] == [
        ["python", "manage.py", "makemigrations"],
        ["python", "manage.py", "migrate"],
        ["celery", "-A", "proj"],
    ]


def run(root: Path, env: dict[str, str], command: list[str]) -> str:
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.integration
def test_the_quick_start_records_a_change(
    venv: Path, redis_server: RedisServer, tmp_path_factory
) -> None:
    root = tmp_path_factory.mktemp("quickstart")
    assert not root.is_relative_to(ROOT)
    env = project_env(venv)
    broker_url = fresh_broker(redis_server, f"redis://127.0.0.1:{redis_server.port}/{BROKER_DB}")
    project = Project(root, venv, broker_url, env)

    # What the quick start assumes: a new project and an app of the user's.
    run(root, env, ["django-admin", "startproject", "proj", "."])
    run(root, env, ["python", "manage.py", "startapp", "shop"])
    with (root / "proj" / "settings.py").open("a") as settings:
        settings.write('\nINSTALLED_APPS += ["shop"]\n')

    blocks = {(b.action, b.path): b for b in quick_start()}
    for (action, path), block in blocks.items():
        if action == "append":
            with (root / path).open("a") as file:
                file.write(f"\n{block.body}")
        elif action == "write":
            (root / path).write_text(block.body)
    with (root / "proj" / "settings.py").open("a") as settings:
        settings.write(f"\nCELERY_BROKER_URL = {broker_url!r}  # the tests' private Redis\n")

    assert "System check identified no issues" in project.manage("check")
    worker = None
    log = root / "worker.log"
    try:
        for command in blocks["run", None].commands():
            if command[0] == "celery" and "worker" in command:
                with log.open("w") as out:
                    worker = subprocess.Popen(
                        command,
                        cwd=root,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            else:
                run(root, env, command)
        assert worker is not None, "the quick start starts no worker"
        [change] = blocks["change", None].commands()
        run(root, env, change)

        def entries() -> list:
            return json.loads(
                project.shell(
                    """
                    import json
                    from auditq.models import AuditEntry
                    print(json.dumps([[e.action, e.changes] for e in AuditEntry.objects.all()]))
                    """
                )
            )

        recorded = poll(lambda: entries() or worker.poll() is not None, timeout=60, interval=0.5)
        assert worker.poll() is None, f"the worker stopped:\n{log.read_text()}"
        assert recorded, f"no AuditEntry after 60s; the worker's log:\n{log.read_text()}"
        [[action, changes]] = recorded
        assert action == "create"
        assert sorted(changes) == ["amount", "card_token", "id"]  # updated_at excluded
        assert changes["card_token"] == [None, "***"]  # masked
        assert poll(lambda: "auditq: recorded 1 outbox row" in log.read_text(), timeout=10)
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if worker is not None:
            stop_group(worker)
