"""The example project's production settings pass ``manage.py check --deploy`` with no
issue at all, and refuse to start without a secret key or allowed hosts."""

import pytest

from tests.helpers import manage

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "example_project.production",
    "SECRET_KEY": "a-production-secret-key-of-more-than-fifty-characters-0123456789",
    "ALLOWED_HOSTS": "example.com",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_check_deploy_finds_nothing():
    done = manage("check", "--deploy", "--fail-level", "DEBUG", **PRODUCTION)

    assert done.returncode == 0, done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS"])
def test_a_missing_secret_or_host_stops_the_project(missing):
    done = manage("check", **{**PRODUCTION, missing: ""})

    assert done.returncode != 0
    assert f"example_project.production needs {missing} in the environment." in done.stderr


def test_the_development_settings_are_what_check_deploy_warns_about():
    """The positive control: the same check on the development settings finds issues."""
    done = manage("check", "--deploy", DJANGO_SETTINGS_MODULE="example_project.settings")

    assert "security.W018" in done.stderr + done.stdout  # DEBUG on
