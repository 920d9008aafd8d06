"""The system checks of ``AUDITQ["DATABASE"]``: the router missing (E011), auditq's other
tables routed away from the writes (E012), the entries routed elsewhere (E013)."""

import pytest
from django.core import checks

from auditq.checks import check_audit_database

pytestmark = pytest.mark.django_db(databases=["default", "audit"])

AUDIT_ROUTER = "auditq.routers.AuditRouter"


class EverythingToAudit:
    """A router that sends every model of auditq to the audit database."""

    def db_for_read(self, model, **hints):
        return "audit" if model._meta.app_label == "auditq" else None

    db_for_write = db_for_read


class EverythingToDefault:
    """A router that sends every model to the default database."""

    def db_for_read(self, model, **hints):
        return "default"

    db_for_write = db_for_read


def ids(settings) -> list[str]:
    return [message.id for message in check_audit_database()]


def test_the_suites_settings_pass():
    assert check_audit_database() == []
    assert not [m for m in checks.run_checks() if m.id and m.id.startswith("auditq.E")]


def test_no_router_is_an_error(settings):
    settings.DATABASE_ROUTERS = []

    [error] = check_audit_database()

    assert error.id == "auditq.E011"
    assert AUDIT_ROUTER in error.msg
    assert "migrate --database=audit" in error.hint


def test_a_router_that_sends_the_outbox_elsewhere_is_an_error(settings):
    settings.DATABASE_ROUTERS = [f"{__name__}.EverythingToAudit", AUDIT_ROUTER]

    found = check_audit_database()

    assert {m.id for m in found} == {"auditq.E012"}
    labels = {m.obj._meta.label for m in found}
    assert {"auditq.Outbox", "auditq.CallbackRun", "auditq.CounterDelta"} <= labels
    assert "sends it to ['audit']" in found[0].msg


def test_a_router_before_that_keeps_the_entries_is_an_error(settings):
    settings.DATABASE_ROUTERS = [f"{__name__}.EverythingToDefault", AUDIT_ROUTER]

    found = check_audit_database()
    assert [m.id for m in found] == ["auditq.E013"] * 3
    assert "sends auditq.AuditEntry to ['default']" in found[0].msg
    assert "sends auditq.AuditChain to ['default']" in found[1].msg
    assert "sends auditq.AuditChainLane to ['default']" in found[2].msg


def test_the_writers_own_database_cannot_hold_only_the_entries(settings):
    settings.AUDITQ = {**settings.AUDITQ, "DATABASE": "default"}

    found = check_audit_database()

    assert {m.id for m in found} == {"auditq.E012"}
    assert "keeps its table out of ['default']" in found[0].msg
