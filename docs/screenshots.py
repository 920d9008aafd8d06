#!/usr/bin/env python
"""Refresh ``docs/trail.png`` and ``docs/dashboard.png`` from what ``make demo`` shows.

Usage: ``.venv/bin/python docs/screenshots.py`` (needs Debian's ``chromium`` and the test
extras' Playwright). Runs the demo on a fresh SQLite database in a temporary folder, serving
the admin on a free port, signs in as admin/admin, and photographs a donation's status
change and the dashboard, as a person sees them right after the demo.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(folder: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "DEMO_PORT": str(port), "SQLITE_PATH": str(folder / "demo.sqlite3")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    log = (folder / "demo.log").open("w")
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "demo"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while "Admin: http" not in (folder / "demo.log").read_text():
        if demo.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the demo did not start:\n" + (folder / "demo.log").read_text())
        time.sleep(0.5)
    return demo


def photograph(port: int) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{base}/admin/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin")
        page.click("input[type=submit]")
        # A settled donation: its status change, with a foreign key and a masked field nearby.
        page.goto(f"{base}/admin/auditq/auditentry/?q=Donation&action__exact=update")
        rows = page.locator("#result_list tbody tr", has_text="status")
        rows.last.locator("a").first.click()
        page.screenshot(path=DOCS / "trail.png", full_page=True)
        page.goto(f"{base}/admin/auditq/auditentry/dashboard/")
        page.screenshot(path=DOCS / "dashboard.png", full_page=True)
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        demo = start_demo(Path(tmp), port)
        try:
            photograph(port)
        finally:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(30)
    print(f"wrote {DOCS / 'trail.png'} and {DOCS / 'dashboard.png'}")


if __name__ == "__main__":
    main()
