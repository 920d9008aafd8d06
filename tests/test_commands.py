"""``auditq_relay``: clear errors on bad input, and the broker's absence reported, not raised."""

import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from auditq import delivery
from auditq.models import Outbox
from tests.celery_app import app as celery_app
from tests.conftest import ROOT
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_relay_publishes_rows_older_than_asked(published):
    Document.objects.create(title="x")
    published().clear()

    call_command("auditq_relay", "--older-than", "3600")
    assert published() == []

    call_command("auditq_relay", "--older-than", "0")
    assert published() == [([Outbox.objects.get().pk], "default")]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than", "-1"], "--older-than must be zero or more seconds"),
        (["--database", "nope"], "Unknown database alias 'nope'"),
    ],
)
def test_relay_rejects_bad_input(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("auditq_relay", *arguments)


def test_relay_reports_an_unreachable_broker(published):
    Document.objects.create(title="x")
    published()
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"
    delivery.reset_producers()

    with pytest.raises(CommandError, match=r"broker is unavailable.*nothing was lost"):
        call_command("auditq_relay", "--older-than", "0")
    assert Outbox.objects.count() == 1


def test_bad_input_exits_non_zero_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "django", "auditq_relay", "--older-than", "nope"],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "invalid float value: 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
