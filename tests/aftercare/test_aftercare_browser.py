"""The amend page and the discharge sheet in Chromium: axe-core finds no serious or critical
violation on either, and a physician using only the keyboard revokes the coach referral."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests import launch_flow
from tests.aftercare.test_amend import context_of, referrals, sign, wait_written
from tests.conftest import ARTIFACTS
from tests.e2e.test_accessibility import axe_violations, describe
from tests.stacks import start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("aftercare-browser"), shared_dir)
    yield stack
    stack.stop()


def signed_page(stack, browser, patient: str):
    """A launch signed (as a browser form post), its session handed to a Chromium context."""
    launch = launch_flow.full(stack.app.url, stack.ehr_url, patient)
    assert "Written to the chart" in sign(stack, launch).text
    context = browser.new_context(viewport={"width": 600, "height": 900})
    context.add_cookies(
        [{"name": c.name, "value": c.value, "url": stack.app.url} for c in launch.browser.cookies]
    )
    return launch, context, context.new_page()


def test_keyboard_only_revoke_and_no_serious_accessibility_issue(stack, browser):
    launch, context, page = signed_page(stack, browser, "P05-pt")
    base = f"{stack.app.url}/c/{context_of(launch)}"
    page.goto(f"{base}/amend")
    expect(page.get_by_role("heading", name="Revoke the coach referral")).to_be_visible()
    violations = axe_violations(page)
    assert violations == [], describe(violations)

    page.locator("body").focus()
    for _ in range(40):  # Tab to the first reason, choose it with Space
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "reason":
            break
    page.keyboard.press("Space")
    page.keyboard.press("Tab")  # the group of radios is one stop: on to the words
    assert page.evaluate("document.activeElement.name") == "text"
    page.keyboard.type("Patient wants to go home first")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.type") == "submit"
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("the coach referral is revoked")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "aftercare-amended.png"), full_page=True)
    (row,) = referrals(stack, "P05-pt")
    wait_written(stack, row.id)

    for language in ("en", "es"):
        page.goto(f"{base}/sheet?lang={language}")
        violations = axe_violations(page)
        assert violations == [], describe(violations)
    context.close()
