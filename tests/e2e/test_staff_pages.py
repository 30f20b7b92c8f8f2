"""Coaches in a real browser: sign in at the identity provider (the sandbox), work a handoff on
the worklist by keyboard and mouse; the worklist passes axe-core (no serious or critical)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests import launch_flow
from tests.conftest import ARTIFACTS
from tests.e2e.test_accessibility import axe_violations, describe
from tests.launch_flow import Controls


def sign_in_as(page, app_url: str, user_id: str) -> None:
    page.goto(f"{app_url}/worklist/")
    page.locator(f'button[name="user"][value="{user_id}"]').click()


def test_coach_signs_in_and_works_the_worklist(browser, sandbox, handoff):
    Controls(sandbox.url).clear()
    launch = launch_flow.full(handoff.url, sandbox.url, "P12-pt")
    launch_flow.sign_all(launch, handoff.url)  # a referral for P12 (if not signed already)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in_as(page, handoff.url, "demo-coach-2")
    expect(page.locator("h1.screen-title")).to_have_text("Warm handoffs", timeout=15000)
    expect(page.locator(".staff-bar")).to_contain_text("Sam Lee, CPRS")
    row = page.locator('tr[data-patient-id="P12-pt"]')
    expect(row).to_be_visible()
    violations = axe_violations(page)
    assert violations == [], describe(violations)

    # Sam's caseload before (other tests on the shared stack may have given Sam handoffs).
    held = re.search(r"Sam Lee, CPRS: (\d+)", page.locator(".loads").inner_text())
    before = int(held.group(1)) if held else 0
    row.get_by_role("button", name="Accept").click()
    row = page.locator('tr[data-patient-id="P12-pt"]')
    expect(row.locator(".status")).to_have_text("accepted")
    expect(page.locator(".loads")).to_contain_text(f"Sam Lee, CPRS: {before + 1}")
    row.get_by_label("Contact note").fill("Warm handoff done at bedside")
    row.get_by_role("button", name="Record contact").click()
    expect(page.locator('tr[data-patient-id="P12-pt"] .status')).to_have_text("in-progress")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    context.close()


def test_auditor_cannot_use_the_worklist(browser, sandbox, handoff):
    context = browser.new_context()
    page = context.new_page()
    sign_in_as(page, handoff.url, "demo-auditor")
    expect(page.locator("body")).to_contain_text("Your role does not allow this page")
    context.close()
