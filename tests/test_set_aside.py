"""Rows no worker can record are set aside: kept with their error, skipped, retried by
hand; the rows behind them are recorded."""

import json
from collections.abc import Iterator

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import OperationalError
from django.test import Client
from django.urls import reverse

from auditq import registry
from auditq.delivery import recording, relay
from auditq.models import AuditEntry, Outbox
from auditq.stream import events
from auditq.stream.context import AuditContext
from tests.helpers import staff
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)

OUTBOX = "admin:auditq_outbox_changelist"


def payload(**changed) -> str:
    """A payload of this version holding one change of a Document, with ``changed``
    replacing parts of it (``event=`` the event's tuple, or top-level keys)."""
    change = events.Change(
        "testapp.document", 1, "one", "create", {}, 1.0, AuditContext(), {"audit": 1}
    )
    data = json.loads(events.dumps([change]))
    if "event" in changed:
        data["events"] = [changed.pop("event")]
    data.update(changed)
    return json.dumps({key: value for key, value in data.items() if value is not None})


GOOD_EVENT = ["testapp.document", 1, "one", "create", {}, 1.0, 0, {"audit": 1}]
MALFORMED = {
    "not JSON": ("{not json", "is not JSON"),
    "a missing key": (payload(batch=None), "KeyError: 'batch'"),
    "an event of the wrong length": (payload(event=GOOD_EVENT[:7]), "ValueError"),
    "a context that is not there": (
        payload(event=[*GOOD_EVENT[:6], 5, {"audit": 1}]),
        "IndexError",
    ),
    "a time that is not a number": (
        payload(event=[*GOOD_EVENT[:5], "noon", 0, {"audit": 1}]),
        "TypeError",
    ),
    "an unknown action": (payload(event=[*GOOD_EVENT[:3], "upsert", *GOOD_EVENT[4:]]), "upsert"),
    "an unknown model label": (
        payload(event=["ghost.phantom", *GOOD_EVENT[1:]]),
        "unknown model 'ghost.phantom'",
    ),
}


def burst(count: int) -> list[Document]:
    return [Document.objects.create(title=f"doc {number}") for number in range(count)]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_row_in_a_burst_is_set_aside_and_the_burst_recorded(undelivered, case):
    text, error = MALFORMED[case]
    before = burst(5)
    bad = Outbox.objects.create(payload=text)
    after = burst(5)
    types = ContentType.objects.count()

    assert recording.record_fresh(limit=500) == 10

    assert AuditEntry.objects.count() == 10
    assert {e.object_pk for e in AuditEntry.objects.all()} == {str(d.pk) for d in before + after}
    [kept] = Outbox.objects.all()
    assert kept.pk == bad.pk and kept.payload == text
    assert kept.failed_at is not None
    assert error in kept.error
    assert ContentType.objects.count() == types  # no ContentType for an unknown label
    # Skipped by every path until retried by hand.
    assert recording.record_fresh() == 0
    assert recording.record_rows([bad.pk]) == 0
    assert recording.record_waiting() == 0
    assert relay.relay(older_than=0, fresh=False) == 0
    assert relay.backlog() == (0, None)
    assert Outbox.objects.get().failed_at is not None


@pytest.mark.parametrize(
    ("delta", "error"),
    [
        (["ghost.parent", 1, "n", 1], "LookupError"),
        (["testapp.team", 1, "name", 1], "testapp.team.name is not a counter cache column"),
        (["testapp.team", "one", "players_count", 1], "ValidationError"),
        (["testapp.team", 2**70, "players_count", 1], "ValidationError"),
        (["testapp.team", 1, "players_count", "many"], "InvalidOperation"),
    ],
)
def test_a_counter_delta_the_flush_could_not_apply_sets_its_row_aside(undelivered, delta, error):
    event = [*GOOD_EVENT[:7], {"audit": 1, "counters": [delta]}]
    burst(2)
    Outbox.objects.create(payload=payload(event=event))
    burst(2)

    assert recording.record_waiting() == 4

    [kept] = Outbox.objects.all()
    assert error in kept.error
    assert kept.error.startswith("a consumer failed:")
    assert AuditEntry.objects.count() == 4


class Picky:
    """A consumer of Documents that cannot record one titled "poison"."""

    name = "picky"

    def __init__(self) -> None:
        self.fail = True
        self.recorded: list[str] = []

    def models(self):
        return [Document]

    def capture(self, model, instance, action, changes, context, loaded):
        return instance.title

    def record(self, found, using):
        for event in found:
            if self.fail and event.consumers[self.name] == "poison":
                raise ValueError("cannot record poison")
            Document.objects.using(using).filter(title="never").exists()  # a query, say
        self.recorded.extend(event.consumers[self.name] for event in found)


@pytest.fixture
def picky() -> Iterator[Picky]:
    consumer = Picky()
    registry.add_consumer(consumer)
    yield consumer
    registry.remove_consumer(consumer.name)


def test_a_consumer_failing_on_one_event_sets_aside_only_its_row(picky, undelivered, caplog):
    burst(3)
    poison = Document.objects.create(title="poison")
    bad = Outbox.objects.order_by("-id").first()
    burst(3)

    assert recording.record_waiting() == 6

    assert sorted(picky.recorded) == sorted(f"doc {n}" for n in (0, 1, 2) * 2)
    # The poison row's own entry went with it: kept whole, recorded whole on retry.
    assert AuditEntry.objects.count() == 6
    assert not AuditEntry.objects.filter(object_pk=str(poison.pk)).exists()
    [kept] = Outbox.objects.all()
    assert kept.pk == bad.pk
    assert kept.error.startswith("a consumer failed: ValueError: cannot record poison (")
    assert f"outbox row {bad.pk} set aside" in caplog.text

    picky.fail = False
    assert Outbox.objects.all().retry() == 1
    assert recording.record_waiting() == 1
    assert not Outbox.objects.exists()
    assert AuditEntry.objects.filter(object_pk=str(poison.pk)).count() == 1


def test_a_database_outage_sets_nothing_aside(picky, undelivered, monkeypatch):
    burst(2)

    def down(found, using):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(picky, "record", down)
    with pytest.raises(OperationalError):
        recording.record_waiting()

    assert Outbox.objects.count() == 2
    assert not Outbox.objects.set_aside().exists()


@pytest.fixture
def poisoned(picky, undelivered) -> Outbox:
    Document.objects.create(title="poison")
    recording.record_waiting()
    return Outbox.objects.get()


def test_the_dashboard_shows_set_aside_rows_with_their_error(poisoned, admin_client):
    page = admin_client.get(reverse("admin:auditq_dashboard")).content.decode()

    start = page.index('id="auditq-set-aside"')
    panel = page[start : page.index("</table>", start)]
    assert '<div class="auditq-figure">1</div>' in panel
    assert "cannot record poison" in panel
    assert reverse("admin:auditq_outbox_change", args=[poisoned.pk]) in panel


def test_set_aside_rows_are_listed_and_retried_from_the_admin(poisoned, picky, admin_client):
    listed = admin_client.get(reverse(OUTBOX), {"set_aside": "yes"}).content.decode()
    assert "cannot record poison" in listed
    page = admin_client.get(reverse("admin:auditq_outbox_change", args=[poisoned.pk]))
    assert "poison" in page.content.decode()

    picky.fail = False
    action = {"action": "retry_selected", "_selected_action": [poisoned.pk]}
    response = admin_client.post(reverse(OUTBOX), action, follow=True)

    assert "1 set-aside row handed back to the workers" in response.content.decode()
    assert Outbox.objects.get().failed_at is None
    assert recording.record_fresh() == 1
    assert not Outbox.objects.exists()
    assert picky.recorded == ["poison"]


def test_retrying_needs_the_change_permission_and_csrf(poisoned, django_user_model):
    action = {"action": "retry_selected", "_selected_action": [poisoned.pk]}
    viewer = staff(django_user_model, "view_outbox")
    client = Client()
    client.force_login(viewer)
    assert client.get(reverse(OUTBOX)).status_code == 200
    client.post(reverse(OUTBOX), action)
    assert Outbox.objects.get().failed_at is not None  # no such action for a viewer

    retrier = staff(django_user_model, "view_outbox", "change_outbox")
    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(retrier)
    assert guarded.post(reverse(OUTBOX), action).status_code == 403  # no CSRF token
    assert Outbox.objects.get().failed_at is not None
    trusted = Client()  # the admin's own form sends the token
    trusted.force_login(retrier)
    trusted.post(reverse(OUTBOX), action)
    assert Outbox.objects.get().failed_at is None


def test_a_retried_row_is_recorded_at_once_when_tasks_run_eagerly(picky):
    Document.objects.create(title="poison")
    assert Outbox.objects.get().failed_at is not None

    picky.fail = False
    assert Outbox.objects.retry() == 1

    assert not Outbox.objects.exists()
    assert picky.recorded == ["poison"]


def test_the_dashboard_hides_set_aside_rows_from_those_who_may_not_see_them(
    poisoned, django_user_model
):
    viewer = staff(django_user_model, "view_auditentry")
    client = Client()
    client.force_login(viewer)

    page = client.get(reverse("admin:auditq_dashboard")).content.decode()

    assert 'id="auditq-set-aside"' not in page
    assert "cannot record poison" not in page


def test_recount_skips_a_row_no_worker_can_read(undelivered):
    from django.core.management import call_command

    from tests.testapp.models import Player, Team

    Outbox.objects.create(payload=MALFORMED["a missing key"][0])
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team)
    recording.record_waiting()

    call_command("auditq_recount", "testapp.Team")

    assert Outbox.objects.set_aside().count() == 1
