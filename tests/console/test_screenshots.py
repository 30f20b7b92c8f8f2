"""The console and the dashboard in headless Chromium: they render under the app's CSP (no
blocked script or style), axe-core finds no serious or critical WCAG 2.1 AA violation, and
screenshots land in test-artifacts/ (console.png, dashboard.png) for people to look at."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from smartapp.config import REPO_ROOT
from smartapp.services import current_services
from smartapp.web.serving import ServerHandle, serve_in_thread
from tests.conftest import ARTIFACTS
from tests.console import logdata
from tests.console.conftest import STAFF, make_app
from tests.staff_login import STAFF_KEY, staff_session_token

AXE = REPO_ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def busy_app(tmp_path: Path, clock: logdata.Clock) -> Iterator[ServerHandle]:
    """The app on a local port with ten weeks of a busy program's log."""
    app = make_app(tmp_path / "instance")
    with app.app_context():
        logdata.fill(current_services().db, clock, logdata.busy_visits())
    handle = serve_in_thread(app, "127.0.0.1", 0)
    handle.app = app
    yield handle
    handle.stop()


def signed_in(browser, handle: ServerHandle, app: Flask, role: str):
    """A browser context carrying a staff session cookie (as after OIDC sign-in)."""
    token = staff_session_token(app, STAFF[role])
    cookie = app.session_interface.get_signing_serializer(app).dumps({STAFF_KEY: token})
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.add_cookies(
        [{"name": app.config["SESSION_COOKIE_NAME"], "value": cookie, "url": handle.url}]
    )
    return context


def open_page(context, url: str, problems: list[str]):
    page = context.new_page()
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")
            and problems.append(m.text)
        ),
    )
    page.on(
        "response",
        lambda r: (
            r.status >= 400
            and not r.url.endswith("/favicon.ico")
            and problems.append(f"{r.status} {r.url}")
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    response = page.goto(url)
    assert response is not None and response.status == 200
    return page


def axe_serious(page) -> list[str]:
    if not AXE.exists():
        pytest.skip(f"{AXE} missing: `python3 dev.py test` installs it")
    page.evaluate(AXE.read_text() + "\n;void 0")  # over DevTools: the page's CSP stays on
    result = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    return [
        f"{v['id']}: {v['help']} {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_console_and_dashboard_screenshots(browser, busy_app):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    context = signed_in(browser, busy_app, busy_app.app, "auditor")
    page = open_page(
        context, f"{busy_app.url}/console/events?from=2024-03-04&to=2024-05-12", problems
    )
    assert page.locator("h1").inner_text() == "Referral log"
    assert "Chain verified" in page.locator(".chain").inner_text()
    assert page.locator("table.events tbody tr").count() == 50
    assert axe_serious(page) == []
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=False)

    page.locator("table.events tbody tr a").first.click()
    page.wait_for_selector("pre.data")
    assert "verifies up to this event" in page.locator(".chain").inner_text()
    assert axe_serious(page) == []
    page.screenshot(path=str(ARTIFACTS / "console-event.png"), full_page=False)
    context.close()

    context = signed_in(browser, busy_app, busy_app.app, "program-manager")
    page = open_page(context, f"{busy_app.url}/console/", problems)  # lands on the dashboard
    assert page.locator("h1").inner_text() == "Program dashboard"
    assert page.locator("svg.chart").count() >= 9
    assert page.get_by_role("link", name="Referral log").count() == 0
    for summary in page.locator("summary").all():
        summary.click()
    assert axe_serious(page) == []
    for summary in page.locator("summary").all():
        summary.click()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    context.close()

    assert problems == []  # no CSP refusal, no script error
