"""What the packaging tests share: the wheel built once from a copy of the checkout, a
fresh venv that holds it, and a new user's project run with that venv's commands.

If pip cannot reach the package index the tests skip, or fail with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, RedisServer, missing

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


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
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


def project_env(venv: Path) -> dict[str, str]:
    """This process's environment without what would leak into a new user's project, with
    the venv's commands first on ``PATH``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in LEAKY_ENV and not key.startswith(LEAKY_ENV_PREFIXES)
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fresh_broker(redis_server: RedisServer, url: str) -> str:
    """The private Redis, running (another test may have stopped it), the database of
    ``url`` emptied. Started again only when its process is gone: a second redis-server
    started beside a slow one would fail to bind, and the first would outlive the session.
    """
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    assert poll(redis_server.ping, timeout=20), "the private redis-server does not answer"
    redis.Redis.from_url(url).flushdb()
    return url


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
