"""Fixtures of the browser tests: Playwright driving the system's Chromium, never a
downloaded browser. With ``CI=true`` a missing Chromium or Playwright fails the tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless Chromium per module.

    Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls
    while a loop runs; the tests use the ORM only between page actions, in this one
    thread, so allowing it is safe (Django documents the variable for such cases).
    """
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        missing("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e .[test])")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}-last.png", full_page=True)
    context.close()


@pytest.fixture
def admin_user():
    from django.contrib.auth.models import User

    return User.objects.create_superuser("admin", "admin@example.com", "admin")


@pytest.fixture
def signed_in(page, live_server, admin_user):
    """The page, signed in to the admin of ``live_server`` as the superuser admin/admin."""
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    return page
