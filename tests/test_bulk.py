"""Bulk writes of tracked models: ``QuerySet.update()``, ``bulk_create()`` and
``bulk_update()`` record one change per row, for every consumer, in the transaction's one
outbox row."""

import contextlib
import gc
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.helpers import trail
from tests.shapesapp.models import Label, Ledger
from tests.testapp.models import Document, Effect, Player, Team, Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def actions(model) -> list[str]:
    return [e.action for e in AuditEntry.objects.for_model(model)]


# --------------------------------------------------------------------------- bulk_create


def test_bulk_create_records_one_create_per_row():
    documents = Document.objects.bulk_create(
        [Document(title="one"), Document(title="two", status="live")]
    )

    assert all(d.pk is not None for d in documents)
    assert [e.changes["title"] for e in AuditEntry.objects.for_model(Document)] == [
        [None, "one"],
        [None, "two"],
    ]
    assert trail(documents[1])[0].changes["status"] == [None, "live"]


def test_bulk_create_runs_handlers_and_moves_counters_per_row():
    team = Team.objects.create(name="red")
    Ticket.objects.bulk_create(
        [Ticket(subject="a", state="closed"), Ticket(subject="b", state="open")]
    )
    Player.objects.bulk_create(
        [Player(name=str(i), team=team, points=Decimal("1.5")) for i in range(3)]
    )

    assert [e.seen["state"] for e in Effect.objects.filter(handler="closed")] == ["closed"]
    team.refresh_from_db()
    assert (team.players_count, team.points_total) == (3, Decimal("4.50"))


def test_bulk_create_allowing_conflicts_is_not_recorded():
    # The database does not say which rows it wrote: documented, not guessed.
    Document.objects.bulk_create([Document(title="maybe")], ignore_conflicts=True)

    assert Document.objects.count() == 1
    assert actions(Document) == []


# --------------------------------------------------------------------------- bulk_update


def test_bulk_update_moves_counters_once():
    team = Team.objects.create(name="red")
    Player.objects.bulk_create([Player(name=str(i), team=team) for i in range(4)])
    players = list(Player.objects.all()[:3])
    for player in players:
        player.active = False

    Player.objects.bulk_update(players, ["active"])

    team.refresh_from_db()
    assert (team.players_count, team.active_count) == (4, 1)
    assert CallbackRun.objects.count() == 0


def test_bulk_update_records_what_changed_on_each_loaded_object():
    Document.objects.bulk_create([Document(title="a"), Document(title="b")])
    first, second = Document.objects.order_by("pk")
    first.title = "a, edited"
    second.status = "live"  # not among the fields written: not a change of the row

    Document.objects.bulk_update([first, second], ["title"])

    assert [e.changes for e in trail(first)][1:] == [{"title": ["a", "a, edited"]}]
    assert [e.action for e in trail(second)] == ["create"]


def test_bulk_update_of_an_object_given_twice_records_its_change_once(settings):
    # Each object's new snapshot is taken right after its capture: the second time the
    # object comes, nothing has changed since. SQUASH off, so nothing folds them later.
    settings.AUDITQ = {**settings.AUDITQ, "SQUASH": False}
    Document.objects.create(title="a")
    document = Document.objects.get()
    document.title = "a, edited"

    Document.objects.bulk_update([document, document], ["title"])

    assert [e.changes for e in trail(document)][1:] == [{"title": ["a", "a, edited"]}]


# --------------------------------------------------------------------------- update()


def test_update_records_one_update_per_row_with_the_old_values():
    Document.objects.bulk_create([Document(title=t, status="draft") for t in ("a", "b", "c")])

    updated = Document.objects.filter(title__in=["a", "b"]).update(status="live")

    assert updated == 2
    changes = [e.changes for e in AuditEntry.objects.for_model(Document).filter(action="update")]
    assert changes == [{"status": ["draft", "live"]}, {"status": ["draft", "live"]}]


def test_update_reads_the_old_values_with_one_select_of_the_updated_columns(undelivered):
    Document.objects.bulk_create([Document(title=str(i)) for i in range(5)])

    with CaptureQueriesContext(connection) as queries:
        Document.objects.filter(title__lt="3").update(status="live")

    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    [read] = [s for s in selects if "auditq_" not in s]
    columns = read.split(" FROM ")[0]
    assert columns == (
        'SELECT "testapp_document"."id" AS "id", "testapp_document"."status" AS "status"'
    )
    if connection.vendor == "postgresql":
        assert read.endswith('FOR UPDATE OF "testapp_document"')  # the rows stay as read
    row = Outbox.objects.order_by("id").last()  # the bulk_create has a row of its own
    assert [e.changes for e in row.events] == [{"status": ["draft", "live"]}] * 3


def test_an_update_with_an_expression_records_the_value_the_database_computed():
    team = Team.objects.create(name="red")
    Player.objects.bulk_create([Player(name="a", team=team, points=Decimal("1"))])

    Player.objects.update(points=F("points") + 2)

    team.refresh_from_db()
    assert team.points_total == Decimal("3.00")  # the counter saw 1 -> 3


def test_update_moves_counters_and_evaluates_when_on_the_new_values():
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    Player.objects.bulk_create([Player(name=str(i), team=red) for i in range(3)])
    Ticket.objects.bulk_create([Ticket(subject="s", state="open")])

    Player.objects.filter(name__in=["0", "1"]).update(team=blue)
    Ticket.objects.update(state="closed")

    red.refresh_from_db()
    blue.refresh_from_db()
    assert (red.players_count, blue.players_count) == (1, 2)
    assert [e.seen["state"] for e in Effect.objects.filter(handler="closed")] == ["closed"]


def test_update_through_a_filtering_default_manager_records_only_its_rows():
    Label.everything.bulk_create([Label(name="shown"), Label(name="hidden", is_secret=True)])

    Label.objects.update(name="renamed")  # the default manager hides the secret row

    assert [e.changes for e in AuditEntry.objects.for_model(Label).filter(action="update")] == [
        {"name": ["shown", "renamed"]}
    ]
    assert set(Label.everything.values_list("name", flat=True)) == {"renamed", "hidden"}


def test_update_refuses_what_django_refuses():
    Document.objects.bulk_create([Document(title="a"), Document(title="b")])

    with pytest.raises(TypeError, match="Cannot update a query once a slice has been taken"):
        Document.objects.order_by("pk")[:1].update(title="c")

    assert sorted(Document.objects.values_list("title", flat=True)) == ["a", "b"]


def test_a_rolled_back_bulk_change_records_nothing():
    Document.objects.bulk_create([Document(title="a")])
    with pytest.raises(RuntimeError), transaction.atomic():
        Document.objects.update(title="b")
        Document.objects.bulk_create([Document(title="c")])
        raise RuntimeError

    assert actions(Document) == ["create"]
    assert not CallbackRun.objects.exists()


def test_bulk_writes_mixed_with_saves_and_a_rolled_back_savepoint():
    document = Document.objects.create(title="single")
    with transaction.atomic():
        Document.objects.bulk_create([Document(title="bulk")])
        try:
            with transaction.atomic():
                Document.objects.update(status="gone")
                raise RuntimeError
        except RuntimeError:
            pass
        Document.objects.filter(pk=document.pk).update(status="live")
        document.refresh_from_db()
        document.title = "single, edited"
        document.save()

    # One change per object (squashed): the savepoint's update of both rows is gone.
    assert [e.changes for e in trail(document)][1:] == [
        {"status": ["draft", "live"], "title": ["single", "single, edited"]}
    ]
    assert actions(Document).count("create") == 2
    assert "gone" not in str([e.changes for e in AuditEntry.objects.all()])


# --------------------------------------------------------------------------- the garbage collector


@contextlib.contextmanager
def collections():
    """The cyclic garbage collections that start in the block (their generations)."""
    started = []

    def count(phase, info):
        if phase == "start":
            started.append(info["generation"])

    gc.collect()  # what came before is not the block's
    gc.callbacks.append(count)
    try:
        yield started
    finally:
        gc.callbacks.remove(count)


def test_bulk_writes_start_no_garbage_collection(undelivered):
    new = [Document(title=str(n)) for n in range(3000)]

    with collections() as during:
        documents = Document.objects.bulk_create(new)
    for document in documents:
        document.status = "live"
    with collections() as during_too:
        Document.objects.bulk_update(documents, ["status"])
        Document.objects.update(title="all the same")
    with collections() as after:
        garbage = [[] for _ in range(5000)]  # a few thousand new objects

    # Without the pause, dozens (a change per row allocates objects by the thousand); the
    # one left is the pass over the objects the caller keeps (the instances' snapshots).
    assert during in ([], [0])
    assert during_too in ([], [0])
    assert Outbox.objects.count() == 3
    assert after and len(garbage) == 5000  # the collector runs again


def test_a_bulk_write_leaves_a_collector_turned_off_as_it_was():
    Document.objects.bulk_create([Document(title="a")])
    gc.disable()
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            Document.objects.update(title="b")
            raise RuntimeError
        Document.objects.update(title="c")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failed_bulk_write_turns_the_collector_back_on():
    Document.objects.bulk_create([Document(title="a")])

    with pytest.raises(ValueError, match="Batch size"):
        Document.objects.bulk_update(Document.objects.all(), ["title"], batch_size=-1)
    with pytest.raises(IntegrityError):
        Document.objects.update(status=None)

    assert gc.isenabled()


# --------------------------------------------------------------------------- bulk=False


def test_bulk_false_leaves_bulk_writes_out_of_the_trail():
    Ledger.objects.bulk_create([Ledger(name="a")])
    Ledger.objects.update(amount=5)
    ledger = Ledger.objects.create(name="b")  # a save is recorded as ever

    assert [(e.object_pk, e.action) for e in AuditEntry.objects.for_model(Ledger)] == [
        (str(ledger.pk), "create")
    ]
