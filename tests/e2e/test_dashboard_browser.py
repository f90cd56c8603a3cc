"""The dashboard in a real browser: headless Chromium driven by Playwright loads ``/``
from a real HTTP server on loopback, as two callers with different rules
(docs/api.md §1.4)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.provision import system_chromium
from playwright.sync_api import Playwright, sync_playwright
from werkzeug.serving import make_server

from setec_core import Database, make_caller
from setec_core.http import make_app
from setec_core.testing import SUPERUSER, HeaderAuthorizer, new_database
from setec_core.wire.gotime import format_time

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SECRET = b"browser-must-never-see-this"


def chromium(p: Playwright) -> str:
    # Playwright's own build is the fallback that tests/peers/provision.py (run by tox
    # before the tests) downloads where the system's Chromium cannot be installed.
    path = system_chromium() or p.chromium.executable_path
    assert Path(path).is_file(), (
        "this test needs Chromium: apt-get install chromium (tox installs it)"
    )
    return path


@pytest.fixture
def served() -> Iterator[tuple[str, Database]]:
    with new_database() as db:
        authz = HeaderAuthorizer(
            {
                "alice": make_caller((["info"], ["team/*"]), user="alice@example.com"),
                "ci": make_caller((["info", "get"], ["ci/*"]), tags=["tag:ci"]),
            }
        )
        server = make_server("127.0.0.1", 0, make_app(db, authz), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", db
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def test_dashboard_rows_for_two_callers(served: tuple[str, Database]) -> None:
    """In a real browser each caller's dashboard lists only its secrets, versions
    ascending and the active one bold; a name or description holding HTML is shown
    escaped and runs no script, the last access is shown, the stylesheet loads under the
    CSP, and no value appears."""
    url, db = served
    db.put(SUPERUSER, "team/app/db-pass", SECRET)
    db.put(SUPERUSER, "team/app/db-pass", b"second")
    db.put(SUPERUSER, "team/app/db-pass", b"third")
    db.activate(SUPERUSER, "team/app/db-pass", 2)
    db.put(SUPERUSER, "team/<img src=x onerror=alert(1)>", b"1")
    db.put(SUPERUSER, "ci/deploy-key", b"k")
    db.set_info(SUPERUSER, "team/app/db-pass", "<img src=x onerror=alert(2)> rotate monthly")
    accessed = db.info(SUPERUSER, "team/app/db-pass").last_access
    assert accessed is not None
    details: dict[str, tuple[str, str | None, str]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(p), headless=True, args=CHROMIUM_ARGS)
        try:
            rows = {}
            for who in ("alice", "ci"):
                context = browser.new_context(extra_http_headers={"X-Setec-Test-Caller": who})
                page = context.new_page()
                dialogs: list[str] = []

                def on_dialog(dialog: Any, seen: list[str] = dialogs) -> None:
                    seen.append(dialog.message)
                    dialog.dismiss()

                page.on("dialog", on_dialog)
                response = page.goto(url + "/")
                assert response is not None
                assert response.status == 200
                assert page.title() == "Setec Secrets Service"
                rows[who] = [
                    (
                        r.locator("td").nth(0).inner_text(),
                        r.locator("td").nth(1).inner_html(),
                    )
                    for r in page.locator("#secrets tbody tr").all()
                ]
                for r in page.locator("#secrets tbody tr").all():
                    cells = r.locator("td")
                    stamp = cells.nth(3).locator("time")
                    details[cells.nth(0).inner_text()] = (
                        cells.nth(2).inner_text(),
                        stamp.get_attribute("datetime") if stamp.count() else None,
                        cells.nth(3).inner_text(),
                    )
                # The stylesheet loaded under the page's own CSP.
                assert page.locator("h1").evaluate("e => getComputedStyle(e).fontSize") == "24px"
                assert SECRET.decode() not in page.content()
                assert not dialogs, "an escaped name ran script"
                context.close()
        finally:
            browser.close()
    assert rows["alice"] == [
        ("team/<img src=x onerror=alert(1)>", "<b>1</b>"),
        ("team/app/db-pass", "1, <b>2</b>, 3"),
    ]
    assert rows["ci"] == [("ci/deploy-key", "<b>1</b>")]
    # The description shown as text, never run; the last access to the second, with
    # the full time in the <time> element (docs/api.md §1.4, §9.5).
    text, full, shown = details["team/app/db-pass"]
    assert text == "<img src=x onerror=alert(2)> rotate monthly"
    assert full == format_time(accessed)
    assert shown == format_time(accessed.replace(microsecond=0))
    assert details["ci/deploy-key"][0] == ""
