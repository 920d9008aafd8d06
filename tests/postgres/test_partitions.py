"""A partitioned trail (AUDITQ["PARTITION"]): the conversion of a table with rows, the
partitions made ahead and on demand, every index on every partition, exactly-once on
(event_id, occurred_at), the row estimate, and prune by dropping partitions. Each test
converts the test database's table inside its own transaction, rolled back after it."""

import datetime
import importlib
import itertools
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from auditq import partitions, retention
from auditq.backends import backend
from auditq.chain import verify
from auditq.checks import check_partition, check_settings
from auditq.models import AuditChainLane, AuditEntry
from auditq.partitions import ahead
from tests.helpers import entry, worker_row
from tests.postgres.partitioning import (
    UTC,
    check_pending,
    indexes_of,
    partition_of,
    record,
    shape,
)
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db

MONTH = override_settings(AUDITQ={"PARTITION": "month"})


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def document():
    made = Document.objects.create(title="doc")
    AuditEntry.objects.all().delete()
    return made


def test_conversion_keeps_every_row_and_key_and_puts_them_in_their_months(document):
    made = [
        entry(document, at=at(text)).pk
        for text in ("2026-09-15", "2026-10-31T23:59:59.999999", "2026-11-01", "2026-11-20")
    ]
    made += [entry(document).pk for _ in range(7)]

    done = partitions.convert("month", batch_size=3)

    assert partitions.is_partitioned()
    assert done.rows == 11
    assert sorted(AuditEntry.objects.values_list("id", flat=True)) == sorted(made)
    assert partition_of(made[0]) == "auditq_auditentry_p2026_09"
    assert partition_of(made[1]) == "auditq_auditentry_p2026_10"
    assert partition_of(made[2]) == partition_of(made[3]) == "auditq_auditentry_p2026_11"
    # The key sequence goes on past the copied keys.
    assert entry(document).pk > max(made)
    # The old table is kept beside, with its rows, under names of its own.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partitions.OLD}")
        assert cursor.fetchone()[0] == 11
    assert all(name.endswith("_old") for name in indexes_of(partitions.OLD))


def test_conversion_partitions_from_the_oldest_entry_to_periods_ahead(document):
    entry(document, at=at("2026-06-10"))
    today = partitions.period_start("month", timezone.now())

    partitions.convert("month", ahead=2)

    found = partitions.listing()
    assert found[0].start == at("2026-06-01")
    assert found[-2].start == partitions.next_start("month", partitions.next_start("month", today))
    assert found[-1].default and found[-1].name == partitions.DEFAULT
    starts = [p.start for p in found[:-1]]
    assert starts == sorted(set(starts))  # one per month, no gap
    assert all(partitions.next_start("month", a) == b for a, b in itertools.pairwise(starts))


def test_every_index_is_on_every_partition(document):
    parent_before = indexes_of("auditq_auditentry")
    assert "auditq_entry_repr_trgm" in parent_before  # migration 0003's, with pg_trgm

    partitions.convert("month")

    parent = indexes_of("auditq_auditentry")
    assert set(parent) == set(parent_before)  # the same names, back on the live table
    wanted = sorted(shape(d) for d in parent.values())
    for partition in partitions.listing():
        assert sorted(shape(d) for d in indexes_of(partition.name).values()) == wanted, partition
    assert any("gin_trgm_ops" in d for d in wanted)
    assert any("(event_id, occurred_at)" in d and "UNIQUE" in d for d in parent.values())
    assert any("(id, occurred_at)" in d for d in parent.values())


def test_a_change_whose_partition_is_missing_goes_to_the_default_then_into_its_own(document):
    partitions.convert("month", ahead=0)
    far = entry(document, at=at("2031-03-04"))
    assert partition_of(far.pk) == partitions.DEFAULT

    made = partitions.ensure(period="month", ahead=1, now=at("2031-02-10"))

    assert made == ["auditq_auditentry_p2031_02", "auditq_auditentry_p2031_03"]
    assert partition_of(far.pk) == "auditq_auditentry_p2031_03"
    assert AuditEntry.objects.get(pk=far.pk).occurred_at == at("2031-03-04")


@pytest.mark.parametrize(
    "period, when, name",
    [
        ("month", "2026-12-06T09:00", "auditq_auditentry_p2026_12"),
        ("week", "2026-12-06T09:00", "auditq_auditentry_p2026w49"),
        ("day", "2026-12-06T09:00", "auditq_auditentry_p2026_12_06"),
    ],
)
def test_periods_and_their_names(period, when, name):
    start = partitions.period_start(period, at(when))
    assert partitions.partition_name(period, start) == name
    assert partitions.period_start(period, partitions.next_start(period, start)) > start


def test_the_same_event_twice_either_side_of_a_month_edge_is_recorded_once(document):
    partitions.convert("month")
    partitions.create("month", at("2026-11-01"), at("2026-12-31"))
    before = worker_row(document, at("2026-11-30T23:59:59.999999"))
    after = worker_row(document, at("2026-12-01T00:00:00"))

    record(before, after)
    record(before, after)  # delivered again: both skipped
    record(after, worker_row(document, at("2026-12-01T00:00:01")))  # one new among them

    entries = list(AuditEntry.objects.order_by("id"))
    assert len(entries) == 3
    assert [partition_of(e.pk) for e in entries[:2]] == [
        "auditq_auditentry_p2026_11",
        "auditq_auditentry_p2026_12",
    ]
    assert all(r.intact for r in verify.verify())


def test_upkeep_makes_partitions_ahead_at_most_once_an_hour(document, monkeypatch):
    partitions.convert("month", ahead=1)
    monkeypatch.setattr(ahead, "_last", {})
    with MONTH:
        partitions.upkeep("default")
        names = [p.name for p in partitions.listing()]
        assert len(names) == partitions.AHEAD + 2  # this month, AHEAD more, the default
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {names[-2]}")
        partitions.upkeep("default")  # within the hour: no DDL
        assert names[-2] not in [p.name for p in partitions.listing()]

        monkeypatch.setattr(ahead, "_last", {})  # an hour later
        partitions.upkeep("default")
        assert [p.name for p in partitions.listing()] == names


def test_upkeep_does_nothing_without_the_setting_or_on_an_unpartitioned_table(monkeypatch):
    monkeypatch.setattr(ahead, "_last", {})
    assert partitions.upkeep("default") == 0
    with MONTH:
        assert partitions.upkeep("default") == 0  # logs: run auditq_partition
    assert not partitions.is_partitioned()


def test_the_row_estimate_sums_the_partitions(document):
    partitions.convert("month")
    for month in (9, 10, 11):
        for _ in range(4):
            entry(document, at=datetime.datetime(2026, month, 5, tzinfo=UTC))
    with connection.cursor() as cursor:
        for partition in partitions.listing():
            cursor.execute(f"ANALYZE {partition.name}")

    assert backend(connection).estimate_rows(connection, "auditq_auditentry") == 12


def test_prune_drops_the_months_wholly_before_the_cutoff_and_deletes_the_rest_by_rows(document):
    now = timezone.now()
    ages = (400, 120, 95, 0)
    record(
        *[
            worker_row(document, now - datetime.timedelta(days=age), object_repr=f"{age}")
            for age in ages
        ]
    )
    partitions.convert("month")
    cutoff = now - datetime.timedelta(days=90)
    whole = [p for p in partitions.listing() if p.end is not None and p.end <= cutoff]
    assert whole

    check_pending()
    deleted = retention.prune(cutoff, batch_size=1)

    assert deleted == 3
    assert list(AuditEntry.objects.values_list("object_repr", flat=True)) == ["0"]
    left = {p.name for p in partitions.listing()}
    assert not left & {p.name for p in whole}
    lane = AuditChainLane.objects.get()  # one worker, one lane
    assert lane.anchor_entry_id == lane.last_entry_id - 1
    assert all(r.intact for r in verify.verify())


def test_prune_leaves_a_partition_holding_a_late_chained_entry(document):
    now = timezone.now()
    record(worker_row(document, now - datetime.timedelta(days=400), object_repr="old"))
    record(worker_row(document, now - datetime.timedelta(days=10), object_repr="recent"))
    record(worker_row(document, now - datetime.timedelta(days=300), object_repr="late"))
    partitions.convert("month")
    check_pending()

    retention.prune(now - datetime.timedelta(days=90))

    # "late" was recorded after "recent": the chain's pruned part stays its beginning.
    assert sorted(AuditEntry.objects.values_list("object_repr", flat=True)) == ["late", "recent"]
    late_month = partition_of(AuditEntry.objects.get(object_repr="late").pk)
    assert late_month in {p.name for p in partitions.listing()}
    assert all(r.intact for r in verify.verify())


def test_the_partition_command_converts_and_lists(document):
    entry(document, at=at("2026-10-10"))
    out = StringIO()

    with MONTH:
        call_command("auditq_partition", "--batch-size", "1", stdout=out)
        assert "Partitioned the audit entries by month: 1 rows copied" in out.getvalue()
        out = StringIO()
        call_command("auditq_partitions", stdout=out)

    assert "auditq_auditentry_p2026_10" in out.getvalue()
    assert partitions.DEFAULT in out.getvalue()


def test_the_partition_command_refuses_without_a_period_or_twice(document):
    with pytest.raises(CommandError, match=r"AUDITQ\['PARTITION'\]"):
        call_command("auditq_partition", stdout=StringIO())
    with MONTH:
        call_command("auditq_partition", stdout=StringIO())
        with pytest.raises(CommandError, match="already partitioned"):
            call_command("auditq_partition", stdout=StringIO())


def test_a_bad_period_is_a_settings_error_and_a_period_off_postgresql_a_check(settings):
    settings.AUDITQ = {"PARTITION": "year"}
    [error] = check_settings()
    assert error.id == "auditq.E002" and "PARTITION" in error.msg
    settings.AUDITQ = {"PARTITION": "month"}
    assert check_partition() == []  # this pass runs on PostgreSQL
    with pytest.raises(ValueError, match="period must be one of"):
        partitions.convert("fortnight")


def test_event_ids_stay_unique_per_occurrence(document):
    partitions.convert("month")
    event = uuid.uuid4()
    record(worker_row(document, at("2026-11-30T12:00"), event_id=event))
    record(worker_row(document, at("2026-11-30T12:00"), event_id=event))
    assert AuditEntry.objects.filter(event_id=event).count() == 1


MIGRATION = importlib.import_module("auditq.migrations.0018_entry_partitions")


def test_migrate_partitions_an_empty_trail_when_the_setting_asks(document, settings):
    schema_editor = connection.schema_editor()
    MIGRATION.partition_new_trail(None, schema_editor)
    assert not partitions.is_partitioned()  # no setting: nothing

    settings.AUDITQ = {"PARTITION": "week"}
    MIGRATION.partition_new_trail(None, schema_editor)

    assert partitions.is_partitioned()
    assert partitions.listing()[0].name == partitions.partition_name(
        "week", partitions.period_start("week", timezone.now())
    )
    assert not indexes_of(partitions.OLD)  # an empty table is not kept


def test_migrate_leaves_a_trail_with_entries_to_the_command(document, settings, caplog):
    entry(document)
    settings.AUDITQ = {"PARTITION": "month"}

    MIGRATION.partition_new_trail(None, connection.schema_editor())

    assert not partitions.is_partitioned()
    assert "run manage.py auditq_partition" in caplog.text


def test_the_relay_command_makes_the_partitions_ahead(document, monkeypatch):
    partitions.convert("month", ahead=0)
    monkeypatch.setattr(ahead, "_last", {})  # a fresh process

    with MONTH:
        call_command("auditq_relay", stdout=StringIO())

    months = [p.start for p in partitions.listing() if not p.default]
    assert len(months) == partitions.AHEAD + 1
    assert months[0] == partitions.period_start("month", timezone.now())


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("auditq_partition", ["--batch-size", "0"], "must be 1 or more"),
        ("auditq_partition", ["--ahead", "-1"], "must be 0 or more"),
        ("auditq_partitions", ["--ahead", "x"], "is not a whole number"),
        ("auditq_partitions", [], "is not partitioned"),
    ],
)
def test_bad_input_to_the_partition_commands_is_a_command_error(command, args, message):
    with MONTH, pytest.raises(CommandError, match=message):
        call_command(command, *args, stdout=StringIO())


def test_the_partitions_command_creates_ahead(document):
    partitions.convert("month", ahead=0)
    out = StringIO()

    with MONTH:
        call_command("auditq_partitions", "--create", "--ahead", "2", stdout=out)

    assert out.getvalue().startswith("Made 2 partitions: ")
    assert len([p for p in partitions.listing() if not p.default]) == 3
