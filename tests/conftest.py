"""Fixtures shared by unit and integration tests.

Integration tests run the real stack: a broker, Celery worker processes (``celery -A
tests.celery_app worker``) and the test database (PostgreSQL when ``DATABASE_URL`` names
one). Every test that takes the ``broker`` fixture runs twice: on a private
``redis-server`` and on RabbitMQ (a private vhost of the server at 127.0.0.1:5672, reached
through a TCP proxy), each of which a test may stop and restart (``AUDITQ_TEST_BROKERS``
narrows the list, e.g. ``redis``). With ``CI=true`` a missing service fails the test
instead of skipping it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection, connections
from kombu import pools

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


class Message(NamedTuple):
    """A task message waiting in a queue, whatever the broker."""

    headers: dict
    """The message's headers (the task's name, id, ``auditq_context``...)."""
    body: bytes
    """Its body: the task's ``[args, kwargs, embed]`` as JSON."""


class RedisServer:
    """A private redis-server that a test may stop and start again on the same port."""

    kind = "redis"

    def __init__(self, binary: str, workdir: Path, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = host  # the address it listens on (a test's own network's, say)
        self.port = _free_port()
        self.url = f"redis://{host}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                # Off the loopback, protected mode refuses every client without a
                # password: here the test's own private network.
                "--protected-mode",
                "yes" if self.host == "127.0.0.1" else "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(self.ping, 10, "redis-server to answer")
        except AssertionError:
            self.stop()  # not left running behind the failed test
            raise

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

    def pause(self, paused: bool = True) -> None:
        """Freeze the server (connections stay open, nothing is answered), or thaw it."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def reset(self) -> None:
        """Start again from an empty broker."""
        self.client().flushall()

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue``."""
        return self.client().llen(queue)

    def messages(self, queue: str) -> list[Message]:
        """The messages waiting in ``queue``, left there."""
        found = [json.loads(raw) for raw in self.client().lrange(queue, 0, -1)]
        return [Message(m["headers"], base64.b64decode(m["body"])) for m in found]

    def drop(self, queue: str) -> None:
        """Lose every message of ``queue``, as a broker that lost them would."""
        self.client().delete(queue)


class RabbitMQ:
    """A private vhost on the RabbitMQ server at 127.0.0.1:5672, reached through a TCP
    proxy (``socat``) that a test may stop and start again on the same port, as it does a
    private redis-server: the server itself is shared and never stopped."""

    kind = "amqp"
    queues = (QUEUE, "celery")
    """The queues a test may fill; emptied before each test."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.port = _free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
                f"TCP:127.0.0.1:{RABBITMQ_PORT}",
            ],
            start_new_session=True,  # stop() ends the forked copies holding connections too
        )
        wait_for(self.ping, 10, "RabbitMQ to answer through the proxy")

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
            self.process = None

    def pause(self, paused: bool = True) -> None:
        """Freeze the proxy (connections stay open, nothing is answered), or thaw it."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def connection(self):
        from kombu import Connection

        return Connection(self.url, connect_timeout=2)

    def ping(self) -> bool:
        try:
            with self.connection() as connection:
                connection.ensure_connection(max_retries=1)
            return True
        except Exception:
            return False

    def reset(self) -> None:
        # The exchanges too: a test may declare auditq's queue another way (a quorum
        # queue on a topic exchange), which RabbitMQ refuses beside the old declaration.
        with self.connection() as connection:
            for queue in self.queues:
                connection.default_channel.queue_delete(queue)
                connection.default_channel.exchange_delete(queue)

    def depth(self, queue: str) -> int:
        with self.connection() as connection:
            channel = connection.channel()
            try:
                return channel.queue_declare(queue=queue, passive=True).message_count
            except connection.channel_errors:
                return 0  # never declared: nothing was sent to it

    def messages(self, queue: str) -> list[Message]:
        # Taken without acknowledgement: they go back to the queue when the channel closes.
        found = []
        with self.connection() as connection:
            channel = connection.channel()
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                found.append(Message(message.headers, message.body))
        return found

    def drop(self, queue: str) -> None:
        with self.connection() as connection:
            connection.default_channel.queue_purge(queue)


RABBITMQ_PORT = 5672


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    """A vhost of this run's own on the local RabbitMQ (guest/guest), removed at the end."""
    for tool in ("rabbitmqctl", "socat"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (RabbitMQ tests)")
    try:
        socket.create_connection(("127.0.0.1", RABBITMQ_PORT), timeout=2).close()
    except OSError:
        missing(f"RabbitMQ does not answer on 127.0.0.1:{RABBITMQ_PORT}")
    server = RabbitMQ(f"auditq-tests-{os.getpid()}")
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", server.vhost], check=True, capture_output=True)
    subprocess.run(
        [*ctl, "set_permissions", "-p", server.vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    server.start()
    yield server
    server.stop()
    subprocess.run([*ctl, "delete_vhost", server.vhost], capture_output=True)


BROKERS = tuple(os.environ.get("AUDITQ_TEST_BROKERS", "redis,amqp").split(","))

# Publisher confirms on RabbitMQ (as the README recommends): a publish returns once the
# broker has the message, so a test may count it at once.
AMQP_OPTIONS = {"confirm_publish": True}


@pytest.fixture(params=BROKERS)
def broker(request) -> Iterator[RedisServer | RabbitMQ]:
    """Publish for real (not eagerly) for the length of a test, to each broker in turn."""
    server = request.getfixturevalue("redis_server" if request.param == "redis" else "rabbitmq")
    if server.process is None or server.process.poll() is not None:
        server.start()  # a test stopped it: start it again on the same port
    wait_for(server.ping, 10, f"the {server.kind} broker to answer")
    server.reset()
    saved = (
        celery_app.conf.task_always_eager,
        celery_app.conf.broker_url,
        celery_app.conf.broker_transport_options,
    )
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = server.url
    celery_app.conf.broker_transport_options = AMQP_OPTIONS if server.kind == "amqp" else {}
    _forget_connections()
    yield server
    (
        celery_app.conf.task_always_eager,
        celery_app.conf.broker_url,
        celery_app.conf.broker_transport_options,
    ) = saved
    _forget_connections()


def _forget_connections() -> None:
    """The app keeps the producer pool of the first broker it published to (eager tasks
    open one too): a project's own ``delay()`` must publish to the broker now set. kombu's
    pools, shared by every app, remember what their connections declared: a queue that
    a test deleted would not be declared again."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    pools.reset()


class Worker:
    """A ``celery worker`` process consuming auditq's test queue.

    ``prefix``: a command the worker runs under, e.g. ``ip netns exec <namespace> ...``
    (tests/integration/hosts.py: a worker on another host).
    """

    count = 0

    def __init__(
        self, broker_url: str, logdir: Path, pool: str = "solo", prefix: Sequence[str] = ()
    ) -> None:
        Worker.count += 1
        self.pool = pool
        self.prefix = list(prefix)
        self.name = f"w{Worker.count}"
        self.hostname = f"{self.name}@auditq-tests"
        self.log = logdir / f"{self.name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            # pytest-django exports --ds here; settings.SETTINGS_MODULE is None while a
            # test overrides settings.
            "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
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
        self.extra_env = extra_env
        return self._spawn()

    def exited(self) -> bool:
        """Whether the process ended by itself (not stopped or killed by the test)."""
        return self.process is not None and self.process.poll() is not None

    def restart(self) -> Worker:
        """Start the process again after it ended, as a supervisor would (systemd's
        ``Restart=always``), with the same name and environment; the log goes on."""
        with self.log.open("a") as log:
            log.write(
                f"--- exited with {self.process.returncode if self.process else None}; restarted\n"
            )
        return self._spawn()

    def _spawn(self) -> Worker:
        extra_env = self.extra_env
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
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
            if sig == signal.SIGTERM and self.env["AUDITQ_TEST_BROKER_URL"].startswith("amqp"):
                # On AMQP the worker's event loop sleeps until its next timer (up to
                # 10 s) before it sees the signal: a message to the worker wakes it.
                self.answers()
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def workers(
    broker: RedisServer | RabbitMQ, transactional_db, tmp_path, request
) -> Iterator[Callable[..., Worker]]:
    """Start worker processes on demand: ``workers()`` starts one and returns it
    (``workers(prefix=[...])`` under a command, e.g. on another host)."""
    started: list[Worker] = []

    def start(prefix: Sequence[str] = (), **extra_env: str) -> Worker:
        worker = Worker(broker.url, tmp_path, prefix=prefix).start(**extra_env)
        started.append(worker)
        return worker

    start.started = started  # type: ignore[attr-defined]
    yield start
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        explain(started)
    for worker in started:
        worker.stop()


def explain(started: list[Worker]) -> None:
    """After a failed test: have each running worker log every thread's stack (Celery's
    SIGUSR1 handler), then print what each said last (shown with the failure)."""
    running = [w for w in started if w.process is not None and w.process.poll() is None]
    for worker in running:
        os.kill(worker.process.pid, signal.SIGUSR1)
    time.sleep(1 if running else 0)
    for worker in started:
        state = "running" if worker in running else "exited"
        print(f"--- {worker.name} ({state}), {worker.log}:")
        print(worker.tail(200))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``report_call``) for fixtures'
    teardown to see whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


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
