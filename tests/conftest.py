"""Fixtures shared by unit and integration tests.

Integration tests run the real stack: a private ``redis-server`` (so a test may stop and
restart it), Celery worker processes (``celery -A tests.celery_app worker``) and the test
database (PostgreSQL when ``DATABASE_URL`` names one). With ``CI=true`` a missing service
fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection, connections

from tests.celery_app import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "auditq-tests"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere: a missing service is a broken CI machine."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server that a test may stop and start again on the same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.ping, 10, "redis-server to answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Publish for real to the private Redis (not eagerly) for the length of a test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test stopped it: start it again on the same port
    wait_for(redis_server.ping, 10, "redis-server to answer")
    redis_server.client().flushall()
    saved = celery_app.conf.task_always_eager, celery_app.conf.broker_url
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = redis_server.url
    _forget_connections()
    yield redis_server
    celery_app.conf.task_always_eager, celery_app.conf.broker_url = saved
    _forget_connections()


def _forget_connections() -> None:
    """The app keeps the producer pool of the first broker it published to (eager tasks
    open one too): a project's own ``delay()`` must publish to the broker now set."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


class Worker:
    """A ``celery worker`` process consuming auditq's test queue."""

    count = 0

    def __init__(self, broker_url: str, logdir: Path, pool: str = "solo") -> None:
        Worker.count += 1
        self.pool = pool
        self.name = f"w{Worker.count}"
        self.hostname = f"{self.name}@auditq-tests"
        self.log = logdir / f"{self.name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
            "AUDITQ_TEST_BROKER_URL": broker_url,
            "AUDITQ_TEST_EAGER": "0",
            "AUDITQ_TEST_WORKER_DB": str(connection.settings_dict["NAME"]),
        }
        if "audit" in connections:  # tests.settings_audit_db: the entries' own database
            env["AUDITQ_TEST_WORKER_AUDIT_DB"] = str(connections["audit"].settings_dict["NAME"])
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, **extra_env: str) -> Worker:
        self.log.write_text("")
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.celery_app",
                    "worker",
                    "-Q",
                    QUEUE,
                    "-P",
                    self.pool,
                    "-c",
                    "1",
                    "-n",
                    self.hostname,
                    "-l",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: self.answers() or self.process.poll() is not None,
            60,
            f"worker {self.name} to start",
        )
        assert self.process.poll() is None, self.log.read_text()
        return self

    def answers(self) -> bool:
        app = Celery(broker=self.env["AUDITQ_TEST_BROKER_URL"], set_as_current=False)
        try:
            return bool(app.control.ping(destination=[self.hostname], timeout=0.5))
        except Exception:  # the broker is still coming up: ask again
            return False
        finally:
            app.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def workers(broker: RedisServer, transactional_db, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Start worker processes on demand: ``workers()`` starts one and returns it."""
    started: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        worker = Worker(broker.url, tmp_path).start(**extra_env)
        started.append(worker)
        return worker

    start.started = started  # type: ignore[attr-defined]
    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(workers) -> Worker:
    return workers()


@pytest.fixture(autouse=True, scope="session")
def _postgres_when_required(django_db_setup, django_db_blocker) -> None:
    """The PostgreSQL pass of ``make test`` must really run on PostgreSQL."""
    if os.environ.get("AUDITQ_REQUIRE_POSTGRES") == "1":
        assert connection.vendor == "postgresql", "the PostgreSQL pass runs on " + connection.vendor


AUDIT_DB_TESTS = ROOT / "tests" / "audit_db"
AUDIT_DB_SETTINGS = "tests.settings_audit_db"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """tests/audit_db runs in passes of its own, with tests.settings_audit_db (a second
    database), and only there; tests/run.sh runs both kinds of pass."""
    inside = collection_path == AUDIT_DB_TESTS or AUDIT_DB_TESTS in collection_path.parents
    if settings.SETTINGS_MODULE == AUDIT_DB_SETTINGS:
        return True if collection_path.name.startswith("test_") and not inside else None
    return True if inside else None


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def undelivered() -> Iterator[None]:
    """Leave committed changes in the outbox instead of recording them eagerly.

    The request path alone: outbox rows are written, nothing consumes them.
    """
    saved = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = saved
