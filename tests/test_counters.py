"""``@counter_cache``: deltas computed on the request path, applied by workers, exact.

Delivery and flushes run eagerly here (in this process);
``tests/integration/test_counters.py`` runs them in real workers.
"""

from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from auditq import counter_cache, disable_auditing, registry
from auditq.consumers import counters
from auditq.delivery import broker, recording
from auditq.models import AuditEntry, CounterDelta, Outbox
from example_project.fundraising.models import Donation, Donor, Fundraiser
from tests.testapp.models import Captain, Player, Team

pytestmark = pytest.mark.django_db(transaction=True)


def counts(team: Team) -> tuple[int, int, Decimal]:
    team.refresh_from_db()
    return team.players_count, team.active_count, team.points_total


def truth(team: Team) -> tuple[int, int, Decimal]:
    """What the counters must say: computed from the children."""
    players = list(Player.objects.filter(team=team))
    active = [p for p in players if p.active]
    return len(players), len(active), sum((p.points for p in active), Decimal("0.00"))


def test_creates_count_and_sum_what_when_selects():
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team, points=Decimal("1.50"))
    Player.objects.create(name="b", team=team, points=Decimal("2.25"), active=False)

    assert counts(team) == (2, 1, Decimal("1.50")) == truth(team)


def test_an_update_that_flips_when_or_changes_the_sum_adjusts_the_parent():
    team = Team.objects.create(name="red")
    player = Player.objects.create(name="a", team=team, points=Decimal("3"))
    player.active = False
    player.save()
    assert counts(team) == (1, 0, Decimal("0.00"))

    player.active = True
    player.points = Decimal("5.10")
    player.save()
    assert counts(team) == (1, 1, Decimal("5.10")) == truth(team)


def test_a_multi_table_child_of_a_counted_model_counts_on_its_parent():
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    captain = Captain.objects.create(name="c", team=red, points=Decimal("2"), armband="C")
    assert counts(red) == (1, 1, Decimal("2.00")) == truth(red)

    captain = Captain.objects.get(pk=captain.pk)
    captain.team = blue
    captain.points = Decimal("3")
    captain.save()
    assert counts(red) == (0, 0, Decimal("0.00")) == truth(red)
    assert counts(blue) == (1, 1, Decimal("3.00")) == truth(blue)

    captain.delete()  # Django deletes the Player row as a Player: counted off once
    assert counts(blue) == (0, 0, Decimal("0.00")) == truth(blue)


def test_moving_a_child_adjusts_both_parents():
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    player = Player.objects.create(name="a", team=red, points=Decimal("4"))

    player.team = blue
    player.save()

    assert counts(red) == (0, 0, Decimal("0.00")) == truth(red)
    assert counts(blue) == (1, 1, Decimal("4.00")) == truth(blue)


def test_a_nullable_foreign_key_counts_only_when_set():
    team = Team.objects.create(name="red")
    player = Player.objects.create(name="free agent", team=None)
    assert not CounterDelta.objects.exists() and not Outbox.objects.exists()

    player.team = team
    player.save()
    assert counts(team) == (1, 1, Decimal("0.00"))
    player.team = None
    player.save()
    assert counts(team) == (0, 0, Decimal("0.00"))


def test_instance_and_queryset_deletes_take_the_children_off():
    team = Team.objects.create(name="red")
    _kept, gone, *rest = (
        Player.objects.create(name=str(i), team=team, points=Decimal(i)) for i in range(5)
    )
    gone.delete()
    Player.objects.filter(pk__in=[p.pk for p in rest]).delete()

    assert counts(team) == (1, 1, Decimal("0.00")) == truth(team)


def test_a_delete_takes_off_what_the_database_held_not_the_edited_instance():
    team = Team.objects.create(name="red")
    player = Player.objects.create(name="a", team=team, points=Decimal("7"))
    player.points = Decimal("100")  # edited, never saved

    player.delete()

    assert counts(team) == (0, 0, Decimal("0.00"))


def test_two_saves_of_a_row_in_one_transaction_count_once():
    team = Team.objects.create(name="red")
    with transaction.atomic():
        player = Player.objects.create(name="a", team=team, points=Decimal("1"))
        player.points = Decimal("2")
        player.save()
        player.active = False
        player.save()
        player.active = True
        player.save()

    assert counts(team) == (1, 1, Decimal("2.00")) == truth(team)


def test_rolled_back_changes_count_nothing_even_in_a_savepoint():
    team = Team.objects.create(name="red")
    with transaction.atomic():
        Player.objects.create(name="kept", team=team)
        with pytest.raises(RuntimeError), transaction.atomic():
            Player.objects.create(name="ghost", team=team)
            raise RuntimeError
    with pytest.raises(RuntimeError), transaction.atomic():
        Player.objects.create(name="ghost too", team=team)
        raise RuntimeError

    assert counts(team) == (1, 1, Decimal("0.00")) == truth(team)


def test_nothing_touches_the_parent_on_the_request_path(undelivered):
    team = Team.objects.create(name="red")
    table = connection.ops.quote_name(Team._meta.db_table)

    with CaptureQueriesContext(connection) as queries:
        player = Player.objects.create(name="a", team=team)
        player.active = False
        player.save()
        player.delete()

    assert not [q["sql"] for q in queries if table in q["sql"]]
    assert counts(team) == (0, 0, Decimal("0.00"))
    [event] = Outbox.objects.order_by("id").first().events
    assert sorted(event.consumers["counters"]) == [
        ["testapp.team", team.pk, "active_count", 1],
        ["testapp.team", team.pk, "players_count", 1],
    ]


def test_many_changes_of_one_parent_become_one_update(undelivered):
    team = Team.objects.create(name="red")
    for i in range(50):
        Player.objects.create(name=str(i), team=team, points=Decimal("1"))
    ids = list(Outbox.objects.values_list("id", flat=True))
    assert len(ids) == 50

    table = connection.ops.quote_name(Team._meta.db_table)
    with CaptureQueriesContext(connection) as queries:
        recording.record_rows(ids)
        assert counters.flush("default") == 1
    updates = [q["sql"] for q in queries if q["sql"].startswith(f"UPDATE {table}")]
    assert len(updates) == 1
    assert counts(team) == (50, 50, Decimal("50.00")) == truth(team)
    assert not CounterDelta.objects.exists()


def test_a_worker_flush_waits_for_a_parents_oldest_delta_to_age(undelivered, monkeypatch):
    """However many workers flush, a parent gets at most one UPDATE per delay."""
    monkeypatch.setattr(counters, "flush_soon", lambda using: None)
    old, young = Team.objects.create(name="old"), Team.objects.create(name="young")
    Player.objects.create(name="a", team=old)
    recording.record_rows(list(Outbox.objects.values_list("id", flat=True)))
    CounterDelta.objects.update(created_at="2000-01-01T00:00:00Z")
    Player.objects.create(name="b", team=old)  # joins the old parent's next UPDATE
    Player.objects.create(name="c", team=young)
    recording.record_rows(list(Outbox.objects.values_list("id", flat=True)))

    assert counters.flush_due("default") == 1  # the old parent, with both its deltas
    assert counters.flush_due("default") == 0  # the young one is not due yet
    assert counts(old)[0] == 2 and counts(young)[0] == 0
    assert set(CounterDelta.objects.values_list("key", flat=True)) == {str(young.pk)}

    assert counters.flush("default") == 1  # a flush of everything (recount, eager mode)
    assert counts(young)[0] == 1


def test_a_redelivered_row_is_counted_once(undelivered):
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team)
    ids = list(Outbox.objects.values_list("id", flat=True))

    recording.record_rows(ids)
    recording.record_rows(ids)  # the broker delivered the message twice
    counters.flush("default")
    counters.flush("default")

    assert counts(team) == (1, 1, Decimal("0.00"))


def test_a_parent_saved_from_a_stale_copy_keeps_its_counts():
    team = Team.objects.create(name="red")
    stale = Team.objects.get(pk=team.pk)
    Player.objects.create(name="a", team=team)
    Player.objects.create(name="b", team=team)

    stale.name = "renamed"
    stale.save()

    assert counts(team) == (2, 2, Decimal("0.00"))
    assert team.name == "renamed"


def test_disable_auditing_still_counts():
    team = Team.objects.create(name="red")
    with disable_auditing():
        Player.objects.create(name="a", team=team)

    assert counts(team)[0] == 1


def test_the_example_keeps_fundraiser_and_donor_counts_on_an_audited_model():
    donor = Donor.objects.create(name="Ada", email="ada@example.com")
    fundraiser = Fundraiser.objects.create(name="Wells")
    paid = Donation.objects.create(
        amount=Decimal("25.00"), donor=donor, fundraiser=fundraiser, status="succeeded"
    )
    Donation.objects.create(amount=Decimal("10.00"), donor=donor, fundraiser=fundraiser)
    paid.status = "refunded"
    paid.save()
    Donation.objects.create(
        amount=Decimal("40.00"), donor=donor, fundraiser=fundraiser, status="succeeded"
    )

    fundraiser.refresh_from_db()
    donor.refresh_from_db()
    assert (fundraiser.donations_count, fundraiser.raised_total) == (3, Decimal("40.00"))
    assert donor.donations_count == 3


def test_deltas_wait_for_a_flush_and_the_sweep_applies_forgotten_ones(undelivered, monkeypatch):
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team)
    monkeypatch.setattr(counters, "flush_soon", lambda using: None)  # the message is lost
    recording.record_rows(list(Outbox.objects.values_list("id", flat=True)))
    assert CounterDelta.objects.count() == 2
    assert counters.sweep("default") == 0  # not overdue yet
    assert counts(team)[0] == 0

    CounterDelta.objects.update(created_at="2000-01-01T00:00:00Z")
    assert counters.sweep("default") == 1
    assert counts(team)[:2] == (1, 1)


def test_flush_soon_sends_one_delayed_flush_per_delay(undelivered, monkeypatch):
    sent = []
    monkeypatch.setattr(broker, "send", lambda *a, **kw: sent.append((a, kw)))
    monkeypatch.setattr(counters, "_next_flush", {})

    counters.flush_soon("default")
    counters.flush_soon("default")

    assert len(sent) == 1
    (task, args), options = sent[0]
    assert (task, args, options["countdown"]) == ("auditq.tasks.flush_counters", ("default",), 1.0)


def test_counter_cache_rejects_bad_arguments():
    with pytest.raises(TypeError, match="fk_name"):
        counter_cache(3, field="x")
    with pytest.raises(TypeError, match="field"):
        counter_cache("team", field="")
    with pytest.raises(TypeError, match="sum"):
        counter_cache("team", field="x", sum=["points"])
    with pytest.raises(TypeError, match="model classes"):
        counter_cache("team", field="x")(object)


def test_a_counter_makes_its_model_tracked():
    assert Player in registry.tracked_models()
    tracking = registry.tracking(Player)
    assert {"team_id", "points", "active"} <= tracking.attnames


def test_a_sum_takes_the_fields_value_whatever_the_instance_holds():
    """Django accepts ``amount="5.00"`` and converts it only for the SQL: the instance
    keeps the string, and the sum must use the field's number."""
    donor = Donor.objects.create(name="Ada", email="ada@example.org")
    fundraiser = Fundraiser.objects.create(name="Roof")
    donation = Donation.objects.create(amount="5.00", donor=donor, fundraiser=fundraiser)

    donation.status = "succeeded"
    donation.save()
    Player.objects.create(name="a", team=Team.objects.create(name="red"), points="2.5")

    fundraiser.refresh_from_db()
    assert (fundraiser.donations_count, fundraiser.raised_total) == (1, Decimal("5.00"))
    assert Team.objects.get().points_total == Decimal("2.50")
    donation.status = "refunded"
    donation.save()
    fundraiser.refresh_from_db()
    assert fundraiser.raised_total == Decimal("0.00")


def test_a_flush_is_bookkeeping_not_a_change_of_the_audited_parent():
    donor = Donor.objects.create(name="Ada", email="ada@example.net")
    fundraiser = Fundraiser.objects.create(name="Roof")
    Donation.objects.create(donor=donor, fundraiser=fundraiser, amount=Decimal("5"))
    Donation.objects.create(donor=donor, fundraiser=fundraiser, amount=Decimal("7"))

    fundraiser.refresh_from_db()
    assert fundraiser.donations_count == 2  # flushed
    # Its trail holds what people did to it, not each flush of its counters.
    assert [e.action for e in AuditEntry.objects.for_object(fundraiser)] == ["create"]
