"""Bulk writes on the real stack: a worker process records one change per row, once, and
counter caches end exact."""

from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import F

from auditq.models import AuditEntry
from tests.conftest import wait_for
from tests.integration.test_counters import quiet  # no outbox row, message or delta left
from tests.testapp.models import Document, Player, Team

pytestmark = pytest.mark.django_db(transaction=True)


def test_bulk_writes_are_recorded_once_per_row_by_a_worker(broker, worker):
    Document.objects.bulk_create([Document(title=f"doc {i}") for i in range(200)])
    with transaction.atomic():
        Document.objects.filter(title__endswith="7").update(status="live")
        Document.objects.filter(title__endswith="9").delete()

    wait_for(lambda: quiet(broker), 60, "the outbox and the queue to empty")

    entries = AuditEntry.objects.for_model(Document)
    assert entries.filter(action="create").count() == 200
    assert entries.filter(action="update").count() == 20
    assert entries.filter(action="delete").count() == 20
    assert entries.values("event_id").distinct().count() == entries.count() == 240
    assert {tuple(e.changes["status"]) for e in entries.filter(action="update")} == {
        ("draft", "live")
    }


def test_bulk_writes_keep_counter_caches_exact(broker, worker):
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    Player.objects.bulk_create(
        [Player(name=str(i), team=red, points=Decimal("1.25")) for i in range(50)]
    )
    Player.objects.filter(name__startswith="1").update(team=blue)
    Player.objects.filter(team=blue).update(points=F("points") * 2)
    players = list(Player.objects.filter(team=red)[:5])
    for player in players:
        player.active = False
    Player.objects.bulk_update(players, ["active"])

    wait_for(lambda: quiet(broker), 60, "every delta applied")

    for team in (red, blue):
        team.refresh_from_db()
        members = list(Player.objects.filter(team=team))
        active = [p for p in members if p.active]
        assert (team.players_count, team.active_count, team.points_total) == (
            len(members),
            len(active),
            sum((p.points for p in active), Decimal("0.00")),
        ), team.name
    assert blue.players_count == 11  # "1" and "10".."19"
