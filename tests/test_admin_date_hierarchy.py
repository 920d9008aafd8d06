"""``YearsFromIndex`` lists the same years, months and days as Django's own
``datetimes()``, from index probes; a list too long to probe is left to Django."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from auditq.admin import YearsFromIndex
from auditq.models import AuditEntry
from tests.helpers import entry
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db

MOMENTS = [
    datetime.datetime(2020, 12, 31, 23, 30, tzinfo=datetime.UTC),
    datetime.datetime(2021, 1, 1, 0, 30, tzinfo=datetime.UTC),
    datetime.datetime(2021, 3, 9, 12, tzinfo=datetime.UTC),
    datetime.datetime(2021, 3, 30, 12, tzinfo=datetime.UTC),
]


def probed(queryset):
    found = queryset.all()
    found.__class__ = YearsFromIndex
    return found


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize(
    ("kind", "since"),
    [
        ("year", None),
        ("month", datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)),
        ("day", datetime.datetime(2021, 3, 1, tzinfo=datetime.UTC)),
    ],
)
def test_the_periods_are_django_s_own(settings, zone, kind, since):
    settings.TIME_ZONE = zone
    document = Document.objects.create(title="doc")
    for at in MOMENTS:
        entry(document, at=at)
    entries = AuditEntry.objects.all()
    if since is not None:
        entries = entries.filter(occurred_at__gte=since)

    assert probed(entries).datetimes("occurred_at", kind) == list(
        entries.datetimes("occurred_at", kind)
    )


def test_days_over_years_are_left_to_django():
    document = Document.objects.create(title="doc")
    entry(document, at=MOMENTS[0])
    entry(document, at=MOMENTS[0] + datetime.timedelta(days=800))

    with CaptureQueriesContext(connection) as queries:
        days = list(probed(AuditEntry.objects.all()).datetimes("occurred_at", "day"))

    assert days == [
        datetime.datetime(2020, 12, 31, tzinfo=datetime.UTC),
        datetime.datetime(2023, 3, 11, tzinfo=datetime.UTC),
    ]
    assert len(queries) == 2  # the bounds, then Django's one query (not 800 probes)


def test_only_the_periods_between_the_first_and_the_last_are_probed():
    document = Document.objects.create(title="doc")
    for year in (2018, 2021):
        entry(document, at=datetime.datetime(year, 6, 1, tzinfo=datetime.UTC))

    with CaptureQueriesContext(connection) as queries:
        years = probed(AuditEntry.objects.all()).datetimes("occurred_at", "year")

    assert [year.year for year in years] == [2018, 2021]
    assert len(queries) == 3  # the bounds, then 2019 and 2020
