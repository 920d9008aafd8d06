"""The admin dashboard: who may open it, its figures and their warnings, and the chart."""

import datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from auditq.admin import chart, figures
from auditq.delivery import heartbeat, recording
from auditq.models import CounterDelta, Outbox
from auditq.templatetags.auditq_admin import auditq_duration
from tests.celery_app import app as celery_app
from tests.helpers import entry
from tests.testapp.models import Document, Player, Team

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:auditq_dashboard"
NOW = datetime.datetime(2026, 11, 22, 14, 3, 7, tzinfo=datetime.UTC)


@pytest.fixture
def superuser(client, django_user_model) -> User:
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return user


def figure(html: str, section: str) -> str:
    """The <div class="module ..."> opening tag of a dashboard figure."""
    start = html.index(f'id="auditq-{section}"')
    return html[html.rindex("<div", 0, start) : start]


def test_dashboard_is_linked_from_the_admin(client, superuser):
    dashboard = reverse(DASHBOARD)

    for page in (reverse("admin:index"), reverse("admin:app_list", args=["auditq"])):
        assert dashboard in client.get(page).content.decode(), page
    assert dashboard in client.get(reverse("admin:auditq_auditentry_changelist")).content.decode()


def test_dashboard_permissions(client, django_user_model):
    url = reverse(DASHBOARD)

    assert client.get(url).status_code == 302  # anonymous: the admin login
    plain = django_user_model.objects.create_user("plain", password="pw")
    client.force_login(plain)
    assert client.get(url).status_code == 403  # signed in, not staff
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403  # staff without view permission
    assert dashboard_link_absent(client)
    staff.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    assert client.get(url).status_code == 200


def dashboard_link_absent(client) -> bool:
    return reverse(DASHBOARD) not in client.get(reverse("admin:index")).content.decode()


def test_dashboard_shows_workers_backlog_lag_chart_and_task_links(client, superuser):
    document = Document.objects.create(title="doc")
    now = timezone.now()
    for minutes_ago in (0, 0, 5, 60 * 23):
        entry(document, at=now - datetime.timedelta(minutes=minutes_ago))
    entry(document, at=now - datetime.timedelta(days=2))  # outside the chart
    Outbox.objects.create(payload="{}", created_at=now - datetime.timedelta(minutes=3))

    response = client.get(reverse(DASHBOARD))

    assert response.status_code == 200
    html = response.content.decode()
    throughput = response.context["throughput"]
    assert (throughput.total, throughput.window) == (4, datetime.timedelta(hours=24))
    assert html.count("<rect ") == len(throughput.bars) >= 2
    assert "Entries per 15 minutes, last 24 hours" in html
    # The oldest undelivered change is 3 minutes old, past RELAY_AFTER_SECONDS (60 s):
    # the backlog and the lag show it, in the alert colour.
    assert response.context["backlog"].rows == 1
    assert "auditq-alert" in figure(html, "backlog")
    assert "auditq-alert" in figure(html, "lag")
    assert "oldest 3 min" in html
    # No worker runs in these tests: no heartbeat.
    assert response.context["workers"].status == "none"
    assert "auditq-alert" in figure(html, "workers")
    assert "no worker has sent a heartbeat in the last 20 s" in html
    assert response.context["queue"].status == "n/a"
    results = reverse("admin:django_celery_results_taskresult_changelist")
    assert f"{results}?status__exact=FAILURE" in html


def test_an_empty_chart_says_there_is_nothing_yet(client, superuser):
    html = client.get(reverse(DASHBOARD)).content.decode()

    start = html.index('id="auditq-throughput"')
    section = html[start : html.index("</div>", start)]
    assert "No entries in the last 24 hours yet: nothing to draw." in section
    assert "By time of change" not in section and "<svg" not in section


def test_a_chart_over_two_days_dates_both_ends(client, superuser):
    document = Document.objects.create(title="doc")
    entry(document, at=timezone.now() - datetime.timedelta(hours=20))

    html = client.get(reverse(DASHBOARD)).content.decode()

    start, end = chart.throughput().start, chart.throughput().end
    assert f"{start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC." in html


def test_lag_is_the_recent_median_when_nothing_waits(client, superuser):
    document = Document.objects.create(title="doc")
    now = timezone.now()
    for ms in (100, 200, 900):
        entry(document, at=now, recorded_at=now + datetime.timedelta(milliseconds=ms))

    html = client.get(reverse(DASHBOARD)).content.decode()

    assert "auditq-ok" in figure(html, "lag")
    assert "200 ms" in html and "worst 900 ms" in html


@pytest.mark.parametrize(
    ("age", "level"),
    [(None, "ok"), (5, "ok"), (30, "warn"), (60, "alert"), (3600, "alert")],
)
def test_backlog_warns_when_changes_wait(age, level):
    oldest = None if age is None else datetime.timedelta(seconds=age)

    assert figures.Backlog(0 if age is None else 3, oldest).level == level


@pytest.mark.django_db(transaction=True)
def test_counters_are_not_called_up_to_date_while_changes_wait_in_the_outbox(
    client, superuser, undelivered
):
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team)  # its +1 is in the outbox, not yet recorded

    response = client.get(reverse(DASHBOARD))

    html = response.content.decode()
    assert (response.context["counters"].deltas, response.context["counters"].undelivered) == (
        0,
        1,
    )
    assert "up to date" not in html
    assert "none recorded yet, but the 1 undelivered change may hold some" in html

    recording.record_waiting()  # a worker records it: the delta now waits for its flush
    html = client.get(reverse(DASHBOARD)).content.decode()
    assert "waiting for a flush" in html and "undelivered change" not in html


def test_dashboard_shows_pending_counter_deltas(client, superuser):
    now = timezone.now()
    html = client.get(reverse(DASHBOARD)).content.decode()
    assert "none waiting: every counter cache is up to date" in html

    for seconds in (1, 40):
        CounterDelta.objects.create(
            parent="testapp.team",
            key="1",
            field="players_count",
            delta=1,
            created_at=now - datetime.timedelta(seconds=seconds),
        )
    response = client.get(reverse(DASHBOARD))

    html = response.content.decode()
    assert response.context["counters"].deltas == 2
    assert "auditq-warn" in figure(html, "counters")  # the oldest waits past its flush
    assert "waiting for a flush; oldest 40." in html


def test_workers_online_are_those_with_a_recent_heartbeat(client, superuser, monkeypatch):
    monkeypatch.setattr(celery_app.control, "ping", lambda **kwargs: pytest.fail("pinged"))
    now = timezone.now()
    heartbeat.beat("w2@host", now - datetime.timedelta(seconds=3))
    heartbeat.beat("w1@host", now)
    heartbeat.beat("gone@host", now - heartbeat.ALIVE_WITHIN - datetime.timedelta(seconds=1))

    response = client.get(reverse(DASHBOARD))

    found = response.context["workers"]
    assert (found.names, found.last_seen, found.level) == (("w1@host", "w2@host"), now, "ok")
    assert "w1@host, w2@host; last heartbeat at" in response.content.decode()


def test_the_dashboard_reads_workers_with_no_broker_round_trip(client, superuser, monkeypatch):
    """The dashboard's cost was a broadcast ping, which waits for its whole timeout."""
    monkeypatch.setattr(figures, "queue_depth", lambda: figures.QueueDepth("q", 0, "ok"))

    def no_broker(*args, **kwargs):
        raise AssertionError("the dashboard talked to the broker")

    monkeypatch.setattr(celery_app, "connection_for_write", no_broker)
    monkeypatch.setattr(celery_app, "connection_for_read", no_broker)
    monkeypatch.setattr(celery_app.control, "ping", no_broker)

    assert client.get(reverse(DASHBOARD)).status_code == 200


def test_dashboard_survives_a_broker_that_is_down(client, superuser, monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:9/0")

    response = client.get(reverse(DASHBOARD))

    assert response.status_code == 200
    assert response.context["queue"].status == "unreachable"
    assert "auditq-alert" in figure(response.content.decode(), "queue")


def test_dashboard_reads_the_redis_queue_depth(client, superuser, redis_server, monkeypatch):
    redis_server.client().flushall()
    redis_server.client().lpush("auditq-tests", "a", "b")
    monkeypatch.setattr(celery_app.conf, "broker_url", redis_server.url)

    queue = client.get(reverse(DASHBOARD)).context["queue"]

    assert (queue.queue, queue.messages, queue.status) == ("auditq-tests", 2, "ok")
    redis_server.client().flushall()
    assert client.get(reverse(DASHBOARD)).context["queue"].messages == 0


def at(**ago) -> datetime.datetime:
    return NOW - datetime.timedelta(**ago)


def test_a_minute_of_activity_fills_a_ten_minute_chart():
    document = Document.objects.create(title="doc")
    for seconds in (5, 6, 7, 30, 65):
        entry(document, at=at(seconds=seconds))

    drawn = chart.throughput(now=NOW)

    assert (drawn.window, drawn.bucket) == (
        datetime.timedelta(minutes=10),
        datetime.timedelta(seconds=10),
    )
    assert drawn.title == "Entries per 10 seconds, last 10 minutes"
    assert (drawn.total, drawn.peak) == (5, 3)
    assert [bar.label.rsplit(": ", 1)[1] for bar in drawn.bars] == [
        "1 entry",
        "1 entry",
        "3 entries",
    ]
    assert sorted(bar.x for bar in drawn.bars) == [bar.x for bar in drawn.bars]
    tallest = max(drawn.bars, key=lambda bar: bar.height)
    assert tallest.height == pytest.approx(chart.BOTTOM - chart.TOP)  # the peak reaches the top
    assert [tick.label for tick in drawn.y_ticks] == ["0", "1", "2", "3"]
    assert drawn.x_ticks[-1].label == "14:03:10"  # the end, to the second
    assert drawn.x_ticks[0].label == "13:53:10"


def test_the_window_grows_to_hold_the_oldest_recent_entry():
    document = Document.objects.create(title="doc")
    for minutes in (1, 90, 170):
        entry(document, at=at(minutes=minutes))
    entry(document, at=at(days=3))  # older than any window: ignored

    drawn = chart.throughput(now=NOW)

    assert drawn.title == "Entries per 5 minutes, last 6 hours"
    assert (drawn.total, len(drawn.bars)) == (3, 3)


def test_an_empty_chart_spans_a_day():
    drawn = chart.throughput(now=NOW)

    assert (drawn.window, drawn.total, drawn.bars) == (datetime.timedelta(hours=24), 0, ())
    assert [tick.label for tick in drawn.y_ticks] == ["0", "1"]


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [
        (1, [0, 1]),
        (7, [0, 2, 4, 6, 8]),
        (9, [0, 5, 10]),
        (100, [0, 50, 100]),
        (101, [0, 50, 100, 150]),
    ],
)
def test_y_axis_ticks_are_round_numbers(peak, ticks):
    window, bucket = chart.WINDOWS[0]
    drawn = chart._layout(window, bucket, NOW - window, NOW, chart.Counter({0: peak}))

    assert [int(tick.label) for tick in drawn.y_ticks] == ticks


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.25, "250 ms"), (12.5, "12.5 s"), (250, "4 min 10 s"), (11100, "3 h 5 min")],
)
def test_durations_read_like_a_person_would_say_them(seconds, shown):
    assert auditq_duration(datetime.timedelta(seconds=seconds)) == shown
    assert auditq_duration(None) == "-"
    assert auditq_duration(datetime.timedelta(days=3, hours=2)) == "3 days 2 h"


def test_run_panels_show_only_to_those_who_may_view_the_runs(client, django_user_model):
    import uuid

    from auditq.models import CallbackRun, OperationRun
    from tests.testapp import operations as ops  # noqa: F401  (an operation is defined)
    from tests.testapp.handlers import always_fails  # noqa: F401  (a handler is registered)

    CallbackRun.objects.create(
        handler="tests.testapp.handlers.always_fails",
        event_id=uuid.uuid4(),
        model="testapp.account",
        object_pk="1",
        object_repr="callback object",
        action="update",
        event={},
        status="failed",
        last_error="ValueError: callback secret detail",
    )
    OperationRun.objects.create(
        name="tests.flaky",
        step="tests.testapp.operations.x",
        status="failed",
        error="RuntimeError: operation secret detail",
    )
    url = reverse(DASHBOARD)
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    client.force_login(user)

    page = client.get(url).content.decode()
    assert client.get(reverse("admin:auditq_callbackrun_changelist")).status_code == 403
    assert client.get(reverse("admin:auditq_operationrun_changelist")).status_code == 403
    for hidden in ("auditq-failed-callbacks", "callback secret detail", "callback object"):
        assert hidden not in page
    for hidden in ("auditq-failed-operations", "operation secret detail"):
        assert hidden not in page

    user.user_permissions.add(Permission.objects.get(codename="view_callbackrun"))
    page = client.get(url).content.decode()
    assert "callback secret detail" in page
    assert "operation secret detail" not in page

    user.user_permissions.add(Permission.objects.get(codename="change_operationrun"))
    assert "operation secret detail" in client.get(url).content.decode()
