"""``AUDITQ["SQUASH"]`` (on by default): several changes of one object in one transaction
are recorded as one, and callbacks and counters follow the folded change."""

from decimal import Decimal

import pytest
from django.db import transaction

from auditq.consumers.audit import AuditConsumer
from auditq.models import AuditEntry, CallbackRun, Outbox
from tests.helpers import trail
from tests.testapp.models import Document, Effect, Player, Tag, Team, Ticket, Vault

pytestmark = pytest.mark.django_db(transaction=True)


def entries(model, pk) -> list[tuple[str, dict]]:
    """``(action, changes)`` of every entry of ``model``'s object ``pk``, oldest first."""
    rows = AuditEntry.objects.for_model(model).filter(object_pk=str(pk))
    return [(e.action, e.changes) for e in rows]


def test_a_create_then_updates_is_one_create_with_the_final_values():
    with transaction.atomic():
        document = Document.objects.create(title="draft title")
        document.title = "final title"
        document.save()
        document.status = "live"
        document.save()

    [(action, changes)] = entries(Document, document.pk)
    assert action == "create"
    assert changes["title"] == [None, "final title"]
    assert changes["status"] == [None, "live"]


def test_updates_are_one_update_from_the_first_old_to_the_last_new():
    document = Document.objects.create(title="one", status="draft")
    with transaction.atomic():
        document.title = "two"
        document.save()
        document.title = "three"
        document.status = "live"
        document.save()
        document.status = "draft"  # back where it started: not a change
        document.save()

    assert entries(Document, document.pk)[1:] == [("update", {"title": ["one", "three"]})]


def test_updates_that_end_where_they_started_record_nothing():
    document = Document.objects.create(title="same")
    with transaction.atomic():
        document.title = "other"
        document.save()
        document.title = "same"
        document.save()

    assert [action for action, _ in entries(Document, document.pk)] == ["create"]


def test_a_create_then_a_delete_records_nothing_and_runs_no_handler():
    team = Team.objects.create(name="red")
    with transaction.atomic():
        ticket = Ticket.objects.create(subject="gone", state="closed")
        ticket_pk = ticket.pk
        ticket.delete()
        document = Document.objects.create(title="gone too")
        document_pk = document.pk
        document.delete()
        Player.objects.create(name="gone", team=team).delete()

    assert entries(Document, document_pk) == []
    assert not CallbackRun.objects.filter(object_pk=str(ticket_pk)).exists()
    assert not Effect.objects.exists()
    assert not Outbox.objects.exists()
    team.refresh_from_db()
    assert team.players_count == 0


def test_updates_then_a_delete_are_one_delete_with_the_values_it_started_from():
    document = Document.objects.create(title="original", status="draft")
    with transaction.atomic():
        document.title = "edited"
        document.save()
        document.delete()

    deleted = AuditEntry.objects.for_model(Document).filter(action="delete").get()
    assert deleted.changes["title"] == ["original", None]
    assert deleted.changes["status"] == ["draft", None]
    assert [e.action for e in AuditEntry.objects.for_model(Document)] == ["create", "delete"]


def test_a_handler_runs_once_for_the_folded_change_when_the_final_state_wants_it():
    with transaction.atomic():
        ticket = Ticket.objects.create(subject="printer", state="closed")
        ticket.subject = "printer, again"
        ticket.save()
        ticket.token = "t-1"
        ticket.save()

    [effect] = Effect.objects.filter(handler="closed")
    assert effect.seen["state"] == "closed"
    assert effect.seen["changes"]["subject"] == [None, "printer, again"]
    assert effect.seen["changes"]["token"] == [None, "t-1"]  # masked in the trail, clear here
    assert CallbackRun.objects.filter(object_pk=str(ticket.pk)).count() == 1


def test_masked_values_reach_the_handler_folded_first_old_to_last_new():
    vault = Vault.objects.create(label="box", combination="1111")
    vault = Vault.objects.get(pk=vault.pk)
    with transaction.atomic():
        vault.combination = "2222"
        vault.save()
        vault.combination = "3333"
        vault.save()

    assert trail(vault)[-1].changes["combination"] == ["***", "***"]
    handled = Effect.objects.filter(handler="vault saved").order_by("id").last()
    assert handled.seen["changes"]["combination"] == ["1111", "3333"]


def test_counters_move_by_what_the_transaction_did():
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    with transaction.atomic():
        player = Player.objects.create(name="a", team=red, points=Decimal("2"))
        player.team = blue  # moved before the commit: red never counted it
        player.save()
        player.points = Decimal("5")
        player.save()

    red.refresh_from_db()
    blue.refresh_from_db()
    assert (red.players_count, red.points_total) == (0, Decimal("0.00"))
    assert (blue.players_count, blue.points_total) == (1, Decimal("5.00"))


def test_many_to_many_changes_fold_into_the_create():
    one, two = Tag.objects.create(name="one"), Tag.objects.create(name="two")
    with transaction.atomic():
        document = Document.objects.create(title="tagged")
        document.tags.add(one, two)
        document.tags.remove(two)

    [(action, changes)] = entries(Document, document.pk)
    assert action == "create"
    assert changes["tags"] == {"added": [one.pk], "removed": []}


def test_a_rolled_back_savepoint_drops_only_its_own_change():
    with transaction.atomic():
        document = Document.objects.create(title="kept")
        try:
            with transaction.atomic():
                document.title = "rolled back"
                document.save()
                raise RuntimeError
        except RuntimeError:
            document.title = "kept"  # the row still says so
        document.status = "live"
        document.save()

    [(action, changes)] = entries(Document, document.pk)
    assert (action, changes["title"], changes["status"]) == (
        "create",
        [None, "kept"],
        [None, "live"],
    )


def test_two_update_calls_in_one_transaction_fold_into_one_change_per_row():
    documents = Document.objects.bulk_create([Document(title=t) for t in ("a", "b")])
    with transaction.atomic():
        Document.objects.update(status="live")
        Document.objects.update(status="archived")

    for document in documents:
        assert entries(Document, document.pk)[1:] == [("update", {"status": ["draft", "archived"]})]


def test_an_update_call_folds_with_a_save_of_one_of_its_rows():
    first, second = Document.objects.bulk_create([Document(title=t) for t in ("a", "b")])
    with transaction.atomic():
        first.title = "a, edited"
        first.save()
        Document.objects.update(status="live")

    assert entries(Document, first.pk)[1:] == [
        ("update", {"title": ["a", "a, edited"], "status": ["draft", "live"]})
    ]
    assert entries(Document, second.pk)[1:] == [("update", {"status": ["draft", "live"]})]


def test_squash_off_records_every_save(settings):
    settings.AUDITQ = {**settings.AUDITQ, "SQUASH": False}
    with transaction.atomic():
        document = Document.objects.create(title="a")
        document.title = "b"
        document.save()

    assert [action for action, _ in entries(Document, document.pk)] == ["create", "update"]


def test_a_consumer_that_fails_to_fold_never_fails_the_commit(monkeypatch, caplog):
    def broken(self, earlier, later, action, changes):
        raise RuntimeError("cannot fold")

    monkeypatch.setattr(AuditConsumer, "squash", broken)
    with transaction.atomic():
        document = Document.objects.create(title="a")
        document.title = "b"
        document.save()

    # Recorded apart, as with SQUASH off, and said so in the log.
    assert [action for action, _ in entries(Document, document.pk)] == ["create", "update"]
    assert "could not fold two changes of testapp.document" in caplog.text
