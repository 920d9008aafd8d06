"""``auditq_recount``: counters recomputed from the children, pending deltas respected."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from auditq.consumers import counters, recount
from auditq.delivery import recording
from auditq.models import CounterDelta, Outbox
from example_project.fundraising.models import Donation, Donor, Fundraiser
from tests.celery_app import app as celery_app
from tests.helpers import manage
from tests.testapp.models import Player, Team

pytestmark = pytest.mark.django_db(transaction=True)


def corrupt(team: Team, **columns: object) -> None:
    """Write counter columns behind the ORM's back, as a raw SQL fix-up would."""
    table = connection.ops.quote_name(Team._meta.db_table)
    sets = ", ".join(f"{connection.ops.quote_name(c)} = %s" for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {sets} WHERE id = %s", [*columns.values(), team.pk])


def counts(team: Team) -> tuple[int, int, Decimal]:
    team.refresh_from_db()
    return team.players_count, team.active_count, team.points_total


@pytest.fixture
def red() -> Team:
    team = Team.objects.create(name="red")
    Player.objects.create(name="a", team=team, points=Decimal("2.50"))
    Player.objects.create(name="b", team=team, points=Decimal("1.00"), active=False)
    return team


def test_recount_repairs_counters_corrupted_by_raw_sql(red, capsys):
    corrupt(red, players_count=-1, points_total=99)

    call_command("auditq_recount", "testapp.Team")

    assert counts(red) == (2, 1, Decimal("2.50"))
    out = capsys.readouterr().out
    assert f"testapp.team {red.pk}: players_count is -1, should be 2" in out
    assert f"testapp.team {red.pk}: points_total is 99, should be 2.5" in out
    assert out.splitlines()[-1] == "2 wrong counters found and corrected."


def test_beat_can_run_the_repair_as_a_task(red):
    corrupt(red, players_count=9)

    result = celery_app.tasks["auditq.tasks.recount"].delay(["testapp.Player"]).get()

    assert result == 1
    assert counts(red)[0] == 2


def test_dry_run_prints_the_wrong_counters_and_changes_nothing(red, capsys):
    corrupt(red, active_count=7)

    call_command("auditq_recount", "testapp.Player", "--dry-run", "--field", "active_count")

    assert counts(red) == (2, 7, Decimal("2.50"))
    out = capsys.readouterr().out
    assert f"testapp.team {red.pk}: active_count is 7, should be 1" in out
    assert out.splitlines()[-1] == "1 wrong counter found; --dry-run: none corrected."
    assert not CounterDelta.objects.exists()


def test_right_counters_are_left_alone(red, capsys):
    call_command("auditq_recount", "--batch-size", "1")

    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "Every counter checked is right: nothing to correct."
    assert not CounterDelta.objects.exists()


def test_deltas_not_yet_applied_are_neither_lost_nor_counted_twice(red, undelivered):
    Player.objects.create(name="in the outbox", team=red, points=Decimal("4"))
    Player.objects.create(name="recorded, not flushed", team=red, points=Decimal("8"))
    recording.record_rows([Outbox.objects.order_by("id").last().pk])
    assert Outbox.objects.count() == 1 and CounterDelta.objects.exists()

    wrong = recount.recount(recount.counters_for_labels(["testapp.Team"]), "default")
    assert wrong == []  # stored + pending already add up to the truth

    recording.record_rows(list(Outbox.objects.values_list("id", flat=True)))

    counters.flush("default")
    assert counts(red) == (4, 3, Decimal("14.50"))


def test_a_repair_while_a_delta_waits_stays_exact(red, undelivered):
    corrupt(red, players_count=50)
    Player.objects.create(name="late", team=red)  # in the outbox during the recount

    call_command("auditq_recount", "testapp.Team", "--field", "players_count")
    recording.record_rows(list(Outbox.objects.values_list("id", flat=True)))

    counters.flush("default")
    assert counts(red)[0] == 3


def test_the_parent_of_an_audited_child_is_repaired_too(capsys):
    donor = Donor.objects.create(name="Ada", email="ada@example.com")
    fundraiser = Fundraiser.objects.create(name="Wells")
    Donation.objects.create(
        amount=Decimal("5"), donor=donor, fundraiser=fundraiser, status="succeeded"
    )
    Fundraiser.objects.update(raised_total=0, donations_count=0)

    call_command("auditq_recount", "fundraising.Fundraiser")

    fundraiser.refresh_from_db()
    assert (fundraiser.donations_count, fundraiser.raised_total) == (1, Decimal("5.00"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nope.Model"], "'nope.Model' is not a model"),
        (["Team"], "'Team' is not a model"),
        (["testapp.Document"], "testapp.Document neither declares nor holds a counter cache"),
        (
            ["testapp.Team", "--field", "name"],
            "no counter cache of these models writes a column 'name'",
        ),
    ],
)
def test_bad_arguments_are_command_errors(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("auditq_recount", *arguments)


@pytest.mark.parametrize("value", ["0", "many", "9223372036854775808"])
def test_a_bad_batch_size_exits_non_zero_without_a_traceback(value):
    result = manage("auditq_recount", "--batch-size", value)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("manage.py auditq_recount: error: argument --batch-size:")
