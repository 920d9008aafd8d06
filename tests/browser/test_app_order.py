"""The "Audit trail" button and the dashboard link with "auditq" appended after the admin
(``INSTALLED_APPS += ["auditq"]``), in a server process of its own: Django set up from
scratch in that order, as in a real project."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.browser.test_admin_pages import shoot
from tests.conftest import ROOT, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """``runserver`` on a fresh SQLite file, migrated, with the superuser admin/admin."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.browser.settings_auditq_last",
        "AUDITQ_BROWSER_DB": str(tmp_path_factory.mktemp("app-order") / "db.sqlite3"),
        "DJANGO_SUPERUSER_PASSWORD": "admin",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)
    django = [sys.executable, "-m", "django"]
    for command in (
        ["migrate", "-v0"],
        ["createsuperuser", "--noinput", "--username=admin", "--email=admin@example.com"],
    ):
        subprocess.run([*django, *command], cwd=ROOT, env=env, check=True, timeout=120)
    port = free_port()
    process = subprocess.Popen(
        [*django, "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(port) or process.poll() is not None, 60, "runserver")
        assert process.poll() is None, "runserver exited"
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_auditq_appended_still_adds_the_button_and_the_dashboard_link(page, server):
    page.goto(f"{server}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    page.click("input[type=submit]")
    page.wait_for_selector("#auditq-sidebar a")  # the dashboard link on the admin index

    page.goto(f"{server}/admin/testapp/document/add/")
    page.fill("#id_title", "Appended report")
    page.click("input[name=_continue]")
    page.wait_for_selector("a.auditq-trail-link")
    assert page.locator("a.auditq-trail-link").count() == 1
    shoot(page, "app-order-change-page")

    page.click("a.auditq-trail-link")
    page.wait_for_selector("#result_list")
    assert "Appended report" in page.inner_text("#result_list")
    page.locator("#result_list tbody tr").first.locator("th a").click()
    page.locator("table.auditq-diff").wait_for()
    assert page.inner_text("h1").startswith("Document #")
    assert "Appended report" in page.inner_text("table.auditq-diff")


def test_the_server_lists_auditq_after_the_admin():
    env = {**os.environ, "AUDITQ_BROWSER_DB": "unused.sqlite3", "PYTHONPATH": str(ROOT)}
    env["DJANGO_SETTINGS_MODULE"] = "tests.browser.settings_auditq_last"
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.INSTALLED_APPS.index('django.contrib.admin'), s.INSTALLED_APPS[-1])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["0", "auditq"], done.stderr
