"""Every system check fires on the configuration it guards against, and only then."""

import itertools
from types import SimpleNamespace

import pytest
from django.core import checks
from django.db import models

from auditq import audited, registry
from auditq.checks import (
    check_audited_fields,
    check_bulk_querysets,
    check_celery,
    check_celery_app,
    check_deploy_eager,
    check_deploy_proxies,
    check_deploy_relay,
    check_middleware,
    check_results_app,
    check_settings,
    check_sqlite_locking,
)
from auditq.delivery import broker
from tests.celery_app import app as celery_app


def ids(messages):
    return [m.id for m in messages]


def test_the_test_project_passes_every_check():
    assert [m for m in checks.run_checks() if m.level >= checks.WARNING] == []


@pytest.fixture
def isolated_registry():
    saved = registry.audited_models()
    yield
    registry._audited.clear()
    registry._audited.update(saved)
    registry.clear_caches()


@pytest.mark.parametrize("argument", ["fields", "exclude", "mask"])
def test_e001_an_unknown_field_name(isolated_registry, argument):
    Ghost = type(
        f"Ghost{argument.title()}",
        (models.Model,),
        {
            "__module__": __name__,
            "name": models.CharField(max_length=10),
            "Meta": type("Meta", (), {"app_label": "testapp"}),
        },
    )
    audited(**{argument: ["name", "nope"]})(Ghost)

    [error] = check_audited_fields()
    assert error.id == "auditq.E001"
    assert error.obj is Ghost
    assert "'nope'" in error.msg
    assert f"{argument}=" in error.msg
    assert "name" in error.hint


@pytest.mark.parametrize(
    ("auditq", "fragment"),
    [
        ({"QUEUES": "x"}, "unknown key 'QUEUES'"),
        ({"QUEUE": 3}, "must be str or None"),
        ({"MASKED_FIELDS": "*iban*"}, "must be list or tuple"),
        ({"MASKED_FIELDS": [""]}, "non-empty strings"),
        ({"TRUSTED_PROXIES": ["10.0.0.0/8", "proxy.local"]}, "'proxy.local'"),
        ({"RELAY_AFTER_SECONDS": 0}, "greater than zero"),
        ({"RELAY_AFTER_SECONDS": True}, "must be int or float"),
        ({"PUBLISH_TIMEOUT": "1"}, "must be int or float"),
        ({"RELAY_BATCH_SIZE": 1.5}, "must be int"),
        ([], "must be a dict"),
    ],
)
def test_e002_bad_settings(settings, auditq, fragment):
    settings.AUDITQ = auditq

    [error] = check_settings()
    assert error.id == "auditq.E002"
    assert fragment in error.msg
    assert error.hint


def test_e003_celery_accepting_pickle():
    saved = celery_app.conf.accept_content
    celery_app.conf.accept_content = ["json", "pickle"]
    try:
        assert ids(check_celery()) == ["auditq.E003"]
    finally:
        celery_app.conf.accept_content = saved


def test_e003_celery_sending_pickle():
    saved = celery_app.conf.task_serializer
    celery_app.conf.task_serializer = "pickle"
    try:
        assert ids(check_celery()) == ["auditq.E003"]
    finally:
        celery_app.conf.task_serializer = saved


def test_w001_middleware_missing(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "auditq" not in m]

    assert ids(check_middleware()) == ["auditq.W001"]


def test_e004_middleware_before_authentication(settings):
    ours = "auditq.middleware.AuditContextMiddleware"
    settings.MIDDLEWARE = [ours, *[m for m in settings.MIDDLEWARE if m != ours]]

    assert ids(check_middleware()) == ["auditq.E004"]


def test_w002_results_app_missing(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django_celery_results"]

    assert ids(check_results_app()) == ["auditq.W002"]


def test_w003_sqlite_without_immediate_transactions(monkeypatch):
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}
    databases = {"default": {**sqlite, "OPTIONS": {"transaction_mode": "IMMEDIATE"}}}
    databases["other"] = sqlite
    monkeypatch.setattr("auditq.checks.settings", SimpleNamespace(DATABASES=databases))

    [warning] = check_sqlite_locking()
    assert warning.id == "auditq.W003"
    assert "'other'" in warning.msg
    assert '"OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}' in warning.hint


def test_e005_the_projects_celery_app_is_not_loaded(monkeypatch):
    from celery import Celery

    assert ids(check_celery_app()) == []
    # As if proj/__init__.py never imported the app: Celery's fallback app is current.
    fallback = Celery("default", fixups=[], set_as_current=False)
    monkeypatch.setattr(
        broker, "current_app", SimpleNamespace(_get_current_object=lambda: fallback)
    )

    [error] = check_celery_app()
    assert error.id == "auditq.E005"
    assert "from .celery import app as celery_app" in error.msg


_children = itertools.count()


@pytest.fixture
def counter_on(monkeypatch):
    """Declare a counter on a throwaway child of ``Team`` for one test."""
    from tests.testapp.models import Team

    monkeypatch.setattr(registry, "_counters", [])

    def declare(fk_name="team", field="players_count", sum=None, when=None, **columns):
        Child = type(
            f"CountedChild{next(_children)}",
            (models.Model,),
            {
                "__module__": __name__,
                "team": models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+"),
                "label": models.CharField(max_length=10),
                "weight": models.IntegerField(default=1),
                "Meta": type("Meta", (), {"app_label": "testapp"}),
            },
        )
        registry._counters.append(registry.Counter(Child, fk_name, field, sum, when))
        registry.clear_caches()
        return Child

    yield declare
    registry.clear_caches()


@pytest.mark.parametrize(
    ("declared", "check_id", "fragment", "hint"),
    [
        ({"fk_name": "label"}, "auditq.E006", "'label' is not a foreign key", "team"),
        ({"fk_name": "nope"}, "auditq.E006", "'nope' is not a foreign key", "team"),
        ({"field": "nope"}, "auditq.E007", "testapp.Team has no such field ('nope')", "default=0"),
        ({"field": "name"}, "auditq.E007", "testapp.Team is not numeric ('name')", "default=0"),
        ({"sum": "label"}, "auditq.E008", "sum='label' is not a numeric field", "leave sum out"),
        ({"when": "status == 'paid'"}, "auditq.E009", "is not callable", "lambda"),
    ],
)
def test_e006_to_e009_counter_caches_that_cannot_work(
    counter_on, declared, check_id, fragment, hint
):
    from auditq.checks import check_counters

    assert check_counters() == []
    Child = counter_on(**declared)

    [error] = check_counters()
    assert (error.id, error.obj) == (check_id, Child)
    assert fragment in error.msg
    assert hint in error.hint


def test_a_summed_counter_of_numbers_passes(counter_on):
    from auditq.checks import check_counters

    counter_on(field="points_total", sum="weight", when=lambda child: child.weight > 0)

    assert check_counters() == []


RELAY_ENTRY = {"task": "auditq.tasks.relay", "schedule": 5.0}


@pytest.fixture
def relaying_off(settings, monkeypatch):
    settings.AUDITQ = {**settings.AUDITQ, "RELAY_IN_WORKER": False}
    monkeypatch.setitem(celery_app.conf, "beat_schedule", {})


def test_w101_relaying_off_with_no_beat_schedule_for_the_relay(relaying_off, settings):
    [warning] = check_deploy_relay()
    assert warning.id == "auditq.W101"
    assert "RELAY_IN_WORKER'] is False and no beat schedule runs auditq.tasks.relay" in (
        warning.msg
    )
    assert "CELERY_BEAT_SCHEDULE" in warning.hint and "auditq_relay" in warning.hint

    celery_app.conf.beat_schedule = {"auditq-relay": RELAY_ENTRY}
    assert check_deploy_relay() == []
    celery_app.conf.beat_schedule = {}
    settings.AUDITQ = {**settings.AUDITQ, "RELAY_IN_WORKER": True}
    assert check_deploy_relay() == []  # the workers relay


def test_w101_cannot_see_django_celery_beat_schedules_and_says_nothing(relaying_off, monkeypatch):
    from django.apps import apps

    installed = apps.is_installed
    monkeypatch.setattr(
        apps, "is_installed", lambda label: label == "django_celery_beat" or installed(label)
    )

    assert check_deploy_relay() == []


def test_w101_leaves_a_missing_celery_app_and_bad_settings_to_their_own_checks(
    relaying_off, settings, monkeypatch
):
    def no_app(app=None):
        raise broker.NoCeleryApp("not loaded")

    monkeypatch.setattr(broker, "celery_app", no_app)
    assert check_deploy_relay() == [] and check_deploy_eager() == []  # auditq.E005
    settings.AUDITQ = {"RELAY_IN_WORKER": "no"}
    assert check_deploy_relay() == [] and check_deploy_proxies() == []  # auditq.E002


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SECURE_PROXY_SSL_HEADER", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("USE_X_FORWARDED_HOST", True),
        ("USE_X_FORWARDED_PORT", True),
    ],
)
def test_w102_a_proxy_in_front_but_no_trusted_proxies(settings, setting, value):
    assert check_deploy_proxies() == []
    setattr(settings, setting, value)

    [warning] = check_deploy_proxies()
    assert warning.id == "auditq.W102"
    assert warning.msg.startswith(f"{setting} says a proxy is in front")
    assert "TRUSTED_PROXIES" in warning.hint

    settings.AUDITQ = {**settings.AUDITQ, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    assert check_deploy_proxies() == []


def test_w102_only_concerns_the_middleware_that_reads_the_address(settings):
    settings.USE_X_FORWARDED_HOST = True
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "auditq" not in m]

    assert check_deploy_proxies() == []


def test_w103_tasks_run_eagerly(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    [warning] = check_deploy_eager()
    assert warning.id == "auditq.W103"
    assert "in the web process" in warning.msg

    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    assert check_deploy_eager() == []


def test_deploy_checks_run_with_check_deploy_only(relaying_off):
    everyday = ids(checks.run_checks(tags=["auditq"]))
    deploy = ids(checks.run_checks(tags=["auditq"], include_deployment_checks=True))

    assert not {"auditq.W101", "auditq.W103"} & set(everyday)
    assert {"auditq.W101", "auditq.W103"} <= set(deploy)  # the test project runs eagerly


def test_w004_a_default_queryset_with_its_own_update(isolated_registry):
    class OwnUpdate(models.QuerySet):
        def update(self, **kwargs):  # never calls super(): auditq would see nothing
            return 0

    Tally = type(
        "Tally",
        (models.Model,),
        {
            "__module__": __name__,
            "name": models.CharField(max_length=10),
            "objects": OwnUpdate.as_manager(),
            "Meta": type("Meta", (), {"app_label": "testapp"}),
        },
    )
    audited(Tally)
    [warning] = check_bulk_querysets()
    assert (warning.id, warning.obj) == ("auditq.W004", Tally)
    assert "OwnUpdate" in warning.msg and "update()" in warning.msg

    audited(bulk=False)(Tally)  # said, knowingly
    assert check_bulk_querysets() == []
