"""``auditq_relay``: clear errors on bad input, and the broker's absence reported, not raised."""

import datetime

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from auditq.delivery import broker
from auditq.models import Outbox
from tests.celery_app import app as celery_app
from tests.helpers import manage
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_relay_publishes_rows_older_than_asked(undelivered, monkeypatch, capsys):
    sent = []
    monkeypatch.setattr(broker, "publish", lambda ids, *args, **kwargs: sent.append(ids))
    Document.objects.create(title="x")

    call_command("auditq_relay", "--older-than", "3600")
    assert sent == []

    call_command("auditq_relay", "--older-than", "0")
    assert sent == [[Outbox.objects.get().pk]]
    assert capsys.readouterr().out.splitlines()[-1] == "Published 1 of 1 undelivered outbox rows."


def test_relay_says_why_it_left_young_rows_and_names_older_than(undelivered, monkeypatch, capsys):
    monkeypatch.setattr(broker, "publish", lambda *args, **kwargs: pytest.fail("published"))
    Document.objects.create(title="x")  # a row of a moment ago: not due for 60 s

    call_command("auditq_relay")

    assert capsys.readouterr().out.splitlines()[-1] == (
        "Published 0 of 1 undelivered outbox rows; 1 is younger than 60 s "
        "(RELAY_AFTER_SECONDS): running workers record new rows by themselves. "
        "--older-than 0 publishes every row now."
    )
    call_command("auditq_relay", "--older-than", "3600")
    assert "younger than 3600 s (--older-than)" in capsys.readouterr().out


def test_relay_says_why_it_left_rows_published_a_moment_ago(undelivered, monkeypatch, capsys):
    monkeypatch.setattr(broker, "publish", lambda *args, **kwargs: pytest.fail("published"))
    Document.objects.create(title="x")
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    Outbox.objects.update(created_at=long_ago, relayed_at=timezone.now())  # a relay sent it

    call_command("auditq_relay")

    assert capsys.readouterr().out.splitlines()[-1] == (
        "Published 0 of 1 undelivered outbox rows; 1 was published less than 60 s "
        "(RELAY_AFTER_SECONDS) ago and waits for a worker. "
        "--older-than 0 publishes every row now."
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than", "-1"], "'-1' must be a finite number of seconds"),
        (["--older-than", "nan"], "'nan' must be a finite number of seconds"),
        (["--older-than", "inf"], "'inf' must be a finite number of seconds"),
        (["--older-than", "1e12"], "'1e12' must be a finite number of seconds"),
        (["--older-than", "soon"], "'soon' is not a number of seconds"),
        (["--database", "nope"], "Unknown database alias 'nope'"),
    ],
)
def test_relay_rejects_bad_input(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("auditq_relay", *arguments)


def test_relay_reports_an_unreachable_broker_and_keeps_the_rows_due(undelivered):
    Document.objects.create(title="x")
    saved = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        with pytest.raises(CommandError, match=r"broker is unavailable.*nothing was lost"):
            call_command("auditq_relay", "--older-than", "0")
    finally:
        celery_app.conf.broker_url = saved
    assert list(Outbox.objects.values_list("relayed_at", flat=True)) == [None]


def test_relay_refuses_celerys_unconfigured_default_app(undelivered, monkeypatch):
    from types import SimpleNamespace

    from celery import Celery

    Document.objects.create(title="x")
    fallback = Celery("default", fixups=[], set_as_current=False)
    monkeypatch.setattr(
        broker, "current_app", SimpleNamespace(_get_current_object=lambda: fallback)
    )

    with pytest.raises(CommandError, match="Nothing was published: the project's Celery app"):
        call_command("auditq_relay", "--older-than", "0")
    assert list(Outbox.objects.values_list("relayed_at", flat=True)) == [None]


def test_relay_reports_a_missing_transport_module_as_such(undelivered, monkeypatch):
    def broken(app):
        raise ModuleNotFoundError("No module named 'packaging'")

    Document.objects.create(title="x")
    monkeypatch.setattr(broker, "broker_connection", broken)

    with pytest.raises(CommandError, match=r"cannot load its broker transport.*'packaging'"):
        call_command("auditq_relay", "--older-than", "0")
    assert list(Outbox.objects.values_list("relayed_at", flat=True)) == [None]


@pytest.mark.parametrize("value", ["nope", "nan", "1e12"])
def test_bad_input_exits_non_zero_without_a_traceback(value):
    result = manage("auditq_relay", "--older-than", value)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()  # one line, no usage block, no traceback
    assert line.startswith(f"manage.py auditq_relay: error: argument --older-than: '{value}'")
