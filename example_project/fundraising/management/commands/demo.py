"""``python manage.py demo`` (``make demo``): auditq end to end, with nothing to set up.

Migrates, creates the ``admin``/``admin`` superuser, starts a Celery worker, makes a
scripted series of changes to the fundraising models, waits until the worker has
recorded them, reports how many were recorded and how fast, runs a donation receipt
operation for each donation left pending and prints the path each run took, then serves
the admin until Ctrl-C (unless ``DEMO_SERVE=0``).

Without ``REDIS_URL`` the broker is Kombu's in-memory transport, which is only
visible inside one process: the worker then runs in a thread of this process, and
so does the web server. With ``REDIS_URL`` the worker is a ``celery worker``
subprocess, stopped when the demo exits.
"""

import argparse
import contextlib
import io
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count
from django.test import RequestFactory
from django.utils import timezone
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from auditq import audit_context, registry
from auditq.consumers import recount
from auditq.delivery import worker
from auditq.models import AuditEntry, CallbackRun, CounterDelta, OperationRun, Outbox
from example_project.celery import app as celery_app
from example_project.fundraising import report
from example_project.fundraising.models import Donation, Donor, Email, Fundraiser
from example_project.fundraising.operations import THANK_YOU_CALL_FROM, donation_receipt
from example_project.fundraising.views import email_events

ACTIONS = ("create", "update", "delete")
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"

DONOR_NAMES = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Katherine Johnson",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Frances Allen",
]
FUNDRAISER_NAMES = ["Clean Water for Lakeside", "Library Roof Repair", "Community Garden"]


def seconds(text: str) -> float:
    """argparse type: a finite, positive number of seconds (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most 86400")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be a port from 1 to 65535")
    return value


class ScenarioRollback(Exception):
    """Raised inside the scenario to roll a transaction back on purpose."""


@dataclass
class Tally:
    """The changes the scenario made, i.e. the audit entries it should produce."""

    actions: Counter[str] = field(default_factory=Counter)
    rolled_back: int = 0
    no_op_saves: int = 0
    webhook_events: int = 0
    webhook_refusal: str = ""

    def add(self, action: str, n: int = 1) -> None:
        self.actions[action] += n

    @property
    def total(self) -> int:
        return sum(self.actions.values())


def uses_memory_broker() -> bool:
    return str(settings.CELERY_BROKER_URL).startswith("memory://")


def describe_database() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"SQLite at {db['NAME']}"
    host = db.get("HOST") or "local socket"
    port = db.get("PORT") or "5432"
    return f"PostgreSQL database {db['NAME']!r} on {host}:{port} as {db.get('USER') or '(default)'}"


def describe_broker() -> str:
    if uses_memory_broker():
        return "embedded in-memory broker, worker runs in this process"
    return f"Redis at {maybe_sanitize_url(settings.CELERY_BROKER_URL)}"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@contextlib.contextmanager
def in_process_worker() -> Iterator[None]:
    """A Celery worker in a thread of this process (the only kind the memory broker reaches)."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30.0,
    ):
        # `celery worker` starts auditq's relay by itself (worker_ready); this embedded
        # test worker sends no such signal.
        worker.start_in_worker(celery_app)
        try:
            yield
        finally:
            worker.stop_in_worker()


@contextlib.contextmanager
def worker_subprocess(stdout: Any, ready_timeout: float = 60.0) -> Iterator[None]:
    """A ``celery worker`` subprocess, waited for until it answers a ping, stopped on exit."""
    hostname = f"auditq-demo-{os.getpid()}@{socket.gethostname()}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "example_project",
        "--quiet",  # no banner: the demo prints what matters
        "worker",
        "-l",
        "warning",
        "--concurrency",
        "2",
        "-n",
        hostname,
    ]
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, timeout=5)
    except OperationalError as exc:
        raise CommandError(f"cannot reach the broker ({describe_broker()}): {exc}") from None

    proc = subprocess.Popen(command, cwd=settings.BASE_DIR, env=os.environ.copy())
    try:
        deadline = time.monotonic() + ready_timeout
        while not celery_app.control.ping(destination=[hostname], timeout=1.0):
            if proc.poll() is not None:
                raise CommandError(f"the Celery worker exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise CommandError(f"the Celery worker did not answer within {ready_timeout:.0f} s")
        stdout.write(f"Worker {hostname} (pid {proc.pid}) is ready.")
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def post_email_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """POST a batch to the webhook view, as the mailing provider would."""
    request = RequestFactory().post(
        "/webhooks/email-events/", data=json.dumps(events), content_type="application/json"
    )
    return json.loads(email_events(request).content)


def run_scenario(rng: random.Random) -> Tally:
    """Create, update and delete fundraising data the way an application would."""
    tally = Tally()

    donors = [
        Donor.objects.create(name=name, email=f"{name.split()[0].lower()}@example.org")
        for name in DONOR_NAMES
    ]
    tally.add("create", len(donors))

    # Several saves in one transaction: one outbox row and one message for all of them.
    with transaction.atomic():
        fundraisers = [Fundraiser.objects.create(name=name) for name in FUNDRAISER_NAMES]
        emails = [
            Email.objects.create(
                donor=donor,
                fundraiser=fundraiser,
                subject=f"{donor.name.split()[0]}, help {fundraiser.name} reach its goal",
            )
            for donor in donors
            for fundraiser in rng.sample(fundraisers, 2)
        ]
    tally.add("create", len(fundraisers) + len(emails))

    # Donations one by one, each save its own transaction (autocommit).
    donations = []
    for _ in range(50):
        email = rng.choice(emails) if rng.random() < 0.6 else None
        donation = Donation.objects.create(
            amount=Decimal(rng.randrange(500, 50_000)) / 100,
            donor=email.donor if email else rng.choice(donors),
            fundraiser=email.fundraiser if email else rng.choice(fundraisers),
            email=email,
            card_token=f"tok_{uuid.UUID(int=rng.getrandbits(128)).hex}",
        )
        donations.append(donation)
    tally.add("create", len(donations))

    # Engagement arrives through the mailing provider's webhook; a worker counts it.
    events = [
        {"email_id": email.pk, "event": kind}
        for email in emails
        for kind in ["open"] * rng.randint(1, 4) + ["click"] * rng.randint(0, 2)
    ]
    tally.webhook_events = post_email_events(events).get("accepted", 0)
    refused = post_email_events([{"email_id": emails[0].pk, "event": "bounce"}])
    tally.webhook_refusal = refused.get("error", "")

    # The payment provider settles the pending donations, in one transaction.
    settled, failed = donations[:40], donations[40:45]
    with transaction.atomic():
        for donation in settled:
            donation.status = Donation.Status.SUCCEEDED
            donation.save()
        for donation in failed:
            donation.status = Donation.Status.FAILED
            donation.save()
    tally.add("update", len(settled) + len(failed))

    # Two refunds.
    for donation in settled[:2]:
        donation.status = Donation.Status.REFUNDED
        donation.save()
    tally.add("update", 2)

    # A card is replaced: the trail shows that the masked token changed, not to what.
    donation = settled[2]
    donation.card_token = f"tok_{uuid.UUID(int=rng.getrandbits(128)).hex}"
    donation.save()
    tally.add("update")

    # A save that changes no tracked field (only updated_at, which is excluded): no entry.
    settled[3].save()
    tally.no_op_saves += 1

    # A change that rolls back leaves no entry.
    donation = settled[4]
    with contextlib.suppress(ScenarioRollback), transaction.atomic():
        donation.status = Donation.Status.REFUNDED
        donation.save()
        raise ScenarioRollback
    tally.rolled_back += 1

    # Failed donations are cleaned up, and a donor with no history asks to be forgotten.
    for donation in failed[:2]:
        donation.delete()
    leaving = Donor.objects.create(name="Temporary Donor", email="temporary@example.org")
    leaving.delete()
    tally.add("create")
    tally.add("delete", 3)

    return tally


class Command(BaseCommand):
    help = (
        "Run the auditq demo: migrate, create the admin/admin superuser, start a Celery "
        "worker, make audited changes, report how they were recorded, then serve the admin."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--wait",
            type=seconds,
            default=30.0,
            help="Seconds to wait for the worker to record the changes (default: 30).",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Do not serve the admin afterwards (same as DEMO_SERVE=0).",
        )
        parser.add_argument(
            "--port",
            type=port,
            default=os.environ.get("DEMO_PORT", "8000"),
            help="Port of the admin server (default: DEMO_PORT or 8000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        serve = not options["no_serve"] and os.environ.get("DEMO_SERVE", "1") != "0"

        self.stdout.write(self.style.MIGRATE_HEADING("auditq demo"))
        self.stdout.write(f"Database: {describe_database()}")
        self.stdout.write(f"Broker:   {describe_broker()}")

        self.migrate()
        admin_user = self.ensure_superuser()

        try:
            recorded_ok = self.run_demo(admin_user, options["wait"], serve, options["port"])
        except KeyboardInterrupt:
            self.stdout.write("\nInterrupted.")
            raise SystemExit(130) from None
        if not recorded_ok:
            raise CommandError("the worker did not record exactly the changes the script made")

    def run_demo(self, admin_user: Any, wait: float, serve: bool, port: int) -> bool:
        """Start the worker, run the scenario, report, serve; True if all was recorded."""
        with contextlib.ExitStack() as stack:
            if uses_memory_broker():
                stack.enter_context(in_process_worker())
                self.stdout.write("Worker started in this process.")
            else:
                self.stdout.write("Starting a Celery worker subprocess...")
                stack.enter_context(worker_subprocess(self.stdout))

            started = timezone.now()
            with audit_context(actor=admin_user, reason="demo script"):
                tally = run_scenario(random.Random())
            self.stdout.write(
                f"Script made {tally.total} changes "
                f"({self.format_counts(tally.actions)}), plus {tally.no_op_saves} save "
                f"that changed nothing and {tally.rolled_back} change rolled back "
                "(neither should be recorded)."
            )

            recorded_ok = self.report(started, tally, wait)
            self.report_operations(wait)

            if serve:
                self.serve(port)
        return recorded_ok

    def migrate(self) -> None:
        out = io.StringIO()
        call_command("migrate", interactive=False, verbosity=1, stdout=out)
        applied = [line for line in out.getvalue().splitlines() if "Applying " in line]
        if applied:
            self.stdout.write(f"Migrations: applied {len(applied)}.")
        else:
            self.stdout.write("Migrations: database already up to date.")

    def ensure_superuser(self) -> Any:
        user_model = get_user_model()
        user = user_model._default_manager.filter(username=ADMIN_USERNAME).first()
        if user is None:
            user = user_model._default_manager.create_superuser(
                username=ADMIN_USERNAME, email="admin@example.org", password=ADMIN_PASSWORD
            )
        else:
            user.is_staff = user.is_superuser = user.is_active = True
            user.set_password(ADMIN_PASSWORD)
            user.save()
        self.stdout.write(f"Superuser: {ADMIN_USERNAME} / {ADMIN_PASSWORD}")
        return user

    def report(self, started: Any, tally: Tally, wait: float) -> bool:
        """Wait for the entries of this run, print what was recorded; True if exactly all."""
        all_entries = AuditEntry.objects.filter(occurred_at__gte=started)
        # The handlers' own changes (the emails' counters and conversion flags) are
        # recorded too, in the scenario's context plus "via_callback": counted apart.
        entries = all_entries.exclude(context__has_key="via_callback")
        t0 = time.monotonic()
        deadline = t0 + wait
        recorded = entries.count()
        while recorded < tally.total and time.monotonic() < deadline:
            time.sleep(0.2)
            recorded = entries.count()
        waited = time.monotonic() - t0
        if recorded >= tally.total:
            # Anything recorded beyond the expected count would be a bug: give it a moment.
            time.sleep(1.0)
            recorded = entries.count()

        by_action = Counter(
            {
                row["action"]: row["n"]
                for row in entries.values("action").annotate(n=Count("pk")).order_by()
            }
        )
        self.stdout.write(
            f"Recorded {recorded} audit entries ({self.format_counts(by_action)}) "
            f"after {waited:.1f} s."
        )

        lags = sorted(
            (recorded_at - occurred_at).total_seconds() * 1000
            for occurred_at, recorded_at in entries.values_list("occurred_at", "recorded_at")
        )
        if lags:
            self.stdout.write(
                f"Commit-to-recorded lag: p50 {percentile(lags, 0.50):.0f} ms, "
                f"p99 {percentile(lags, 0.99):.0f} ms, max {lags[-1]:.0f} ms."
            )

        self.report_callbacks(tally, deadline, all_entries.filter(context__has_key="via_callback"))
        if recorded == tally.total and by_action == tally.actions:
            self.stdout.write(self.style.SUCCESS("Every change was recorded exactly once."))
            return True
        self.stdout.write(
            self.style.ERROR(
                f"Expected {tally.total} entries ({self.format_counts(tally.actions)}), "
                f"found {recorded} ({self.format_counts(by_action)})."
            )
        )
        return False

    def report_callbacks(self, tally: Tally, deadline: float, by_handlers: Any) -> None:
        """Wait for the handlers to settle, then print the conversion report."""
        while time.monotonic() < deadline and (
            Outbox.objects.exists()
            or CallbackRun.objects.filter(status="pending").exists()
            or CounterDelta.objects.exists()
        ):
            time.sleep(0.2)
        runs = Counter(CallbackRun.objects.values_list("status", flat=True))
        self.stdout.write(
            f"Webhook: {tally.webhook_events} email events accepted; a bad batch was refused "
            f"({tally.webhook_refusal})."
        )
        self.stdout.write(
            f"Callbacks: {self.format_counts(runs)} handler runs; they made "
            f"{by_handlers.count()} "
            "audited changes of their own (counters, conversion flags)."
        )
        self.stdout.write("Conversion by fundraiser (donations and raised: counter caches):")
        self.stdout.write(
            f"  {'fundraiser':<28} {'emails':>6} {'opens':>6} {'clicks':>6} "
            f"{'donations':>9} {'raised':>10} {'converted':>10}"
        )
        for row in report.rows():
            self.stdout.write(
                f"  {row.name:<28} {row.emails_sent:>6} {row.email_opens:>6} "
                f"{row.email_clicks:>6} {row.donations_count:>9} {row.raised_total:>10} "
                f"{row.converted:>4} ({row.conversion_rate:>4.0%})"
            )
        wrong = recount.recount(recount.counters_for_labels([]), "default", dry_run=True)
        if wrong:
            self.stdout.write(
                self.style.ERROR(
                    f"Counter caches: {len(wrong)} values disagree with a recount "
                    "from the donations."
                )
            )
        else:
            self.stdout.write(
                f"Counter caches ({len(registry.counters())} declared): every count and total "
                "matches a recount from the donations."
            )

    def report_operations(self, wait: float) -> None:
        """Start a donation receipt for each donation still pending; print each run's path."""
        pending = Donation.objects.filter(status=Donation.Status.PENDING).order_by("pk")
        runs = [
            donation_receipt.start(donation_id=donation.pk, key=f"donation-{donation.pk}")
            for donation in pending
        ]
        finished = OperationRun.objects.filter(pk__in=[run.pk for run in runs]).order_by("pk")
        deadline = time.monotonic() + wait
        while (
            finished.filter(status__in=["pending", "running"]).exists()
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        outcome = Counter(finished.values_list("status", flat=True))
        self.stdout.write(
            f"Operations: {len(runs)} donation receipts (charge, record, a thank-you call "
            f"for gifts of {THANK_YOU_CALL_FROM} or more, receipt): "
            f"{self.format_counts(outcome)}."
        )
        for run in finished:
            path = " -> ".join(
                step.rsplit(".", 1)[1]
                for step in run.steps.filter(status="succeeded")
                .order_by("id")
                .values_list("step", flat=True)
            )
            self.stdout.write(f"  donation #{run.params['donation_id']}: {path} ({run.status})")

    def serve(self, port: int) -> None:
        from django.contrib.staticfiles.handlers import StaticFilesHandler
        from django.core.servers.basehttp import get_internal_wsgi_application, run

        handler = StaticFilesHandler(get_internal_wsgi_application())
        self.stdout.write(
            self.style.SUCCESS(f"Admin: http://127.0.0.1:{port}/admin/ ")
            + f"(log in as {ADMIN_USERNAME} / {ADMIN_PASSWORD}; Ctrl-C to stop)"
        )
        try:
            run("127.0.0.1", port, handler, threading=True)
        except OSError as exc:
            raise CommandError(
                f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}. "
                "Set DEMO_PORT to another port, or DEMO_SERVE=0."
            ) from None
        except KeyboardInterrupt:
            self.stdout.write("\nStopped.")

    @staticmethod
    def format_counts(counts: Counter[str]) -> str:
        if not counts:
            return "none"
        order = [*ACTIONS, *sorted(set(counts) - set(ACTIONS))]
        return ", ".join(f"{counts[action]} {action}" for action in order if counts[action])
