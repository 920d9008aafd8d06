"""The AUDITQ settings: typed, defaulted, and cleared when a test changes them."""

import ast
import dataclasses
import ipaddress
import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from auditq import conf
from tests.conftest import ROOT


def test_defaults_apply_to_missing_keys(settings):
    settings.AUDITQ = {}

    assert conf.get() == conf.Settings()
    assert conf.get().QUEUE is None
    assert conf.get().TRUSTED_PROXIES == ()


def test_values_are_typed(settings):
    settings.AUDITQ = {
        "QUEUE": "audit",
        "MASKED_FIELDS": ["*iban*"],
        "TRUSTED_PROXIES": ["10.0.0.0/8", "192.0.2.1"],
        "RELAY_AFTER_SECONDS": 5,
    }

    loaded = conf.get()
    assert loaded.QUEUE == "audit"
    assert loaded.MASKED_FIELDS == ("*iban*",)
    assert (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    ) == loaded.TRUSTED_PROXIES
    assert loaded.RELAY_AFTER_SECONDS == 5


def test_an_invalid_setting_raises_a_clear_error(settings):
    settings.AUDITQ = {"RELAY_AFTER_SECONDS": -1}

    with pytest.raises(ImproperlyConfigured, match="RELAY_AFTER_SECONDS"):
        conf.get()


def test_no_auditq_setting_at_all_means_defaults(settings):
    del settings.AUDITQ

    assert conf.problems() == []
    assert conf.get() == conf.Settings()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RELAY_POLL_SECONDS", 0, "must be a finite number greater than zero"),
        ("RELAY_POLL_SECONDS", float("nan"), "must be a finite number greater than zero"),
        ("RELAY_AFTER_SECONDS", float("inf"), "must be a finite number greater than zero"),
        ("RELAY_POLL_SECONDS", "fast", "must be int or float, not str"),
        ("RELAY_IN_WORKER", "yes", "must be bool, not str"),
        ("RELAY_BATCH_SIZE", True, "must be int, not bool"),
        ("RELAY_THREADS", 0, "must be a finite number greater than zero"),
    ],
)
def test_relay_settings_are_checked(settings, key, value, message):
    settings.AUDITQ = {key: value}

    [(problem, _hint)] = conf.problems()
    assert key in problem
    assert message in problem


def test_the_relay_can_be_kept_out_of_the_workers(settings):
    settings.AUDITQ = {"RELAY_IN_WORKER": False, "RELAY_POLL_SECONDS": 0.05}

    assert (conf.get().RELAY_IN_WORKER, conf.get().RELAY_POLL_SECONDS) == (False, 0.05)


def test_the_readme_lists_every_setting_with_its_default():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("\nAUDITQ = {\n", 1)[1].split("\n}", 1)[0]
    listed = {
        key: ast.literal_eval(value)
        for key, value in re.findall(r'^    "(\w+)": (.+?),  #', block, re.MULTILINE)
    }

    defaults = {f.name: f.default for f in dataclasses.fields(conf.Settings)}
    assert set(listed) == set(defaults)
    for name, value in listed.items():
        shown = tuple(value) if isinstance(value, list) else value
        assert shown == defaults[name], name


def test_a_thread_that_read_the_settings_before_a_change_keeps_no_stale_copy(settings, monkeypatch):
    import threading

    reading, release = threading.Event(), threading.Event()
    read = conf._read

    def slow_read():
        found = read()  # the settings as they were
        reading.set()
        release.wait(5)
        return found

    settings.AUDITQ = {**settings.AUDITQ, "QUEUE": "before"}
    monkeypatch.setattr(conf, "_read", slow_read)
    relay = threading.Thread(target=conf.get)  # as the relay thread calls it
    relay.start()
    reading.wait(5)
    monkeypatch.setattr(conf, "_read", read)
    settings.AUDITQ = {**settings.AUDITQ, "QUEUE": "after"}  # changed meanwhile
    release.set()
    relay.join(5)

    assert conf.get().QUEUE == "after"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("audit", "AUDITQ['DATABASE'] is 'audit', which is not an alias of DATABASES"),
        (3, "AUDITQ['DATABASE'] must be str or None, not int"),
    ],
)
def test_the_audit_database_must_be_an_alias(settings, value, message):
    settings.AUDITQ = {"DATABASE": value}

    [(problem, _hint)] = conf.problems()
    assert message in problem
    with pytest.raises(ImproperlyConfigured, match="DATABASE"):
        conf.get()


def test_no_audit_database_by_default(settings):
    settings.AUDITQ = {}

    assert conf.get().DATABASE is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ADMIN_SEARCH_DAYS", 0, "must be a number of days from 1 to 36500, or None"),
        ("ADMIN_SEARCH_DAYS", 10**6, "must be a number of days from 1 to 36500, or None"),
        ("ADMIN_SEARCH_DAYS", 7.5, "must be int or None, not float"),
        ("ADMIN_SEARCH_DAYS_ABOVE", -1, "must be 0 or more"),
        ("ADMIN_SEARCH_DAYS_ABOVE", None, "must be int, not NoneType"),
    ],
)
def test_the_admin_search_window_is_checked(settings, key, value, message):
    settings.AUDITQ = {key: value}

    [(problem, _hint)] = conf.problems()
    assert key in problem
    assert message in problem
