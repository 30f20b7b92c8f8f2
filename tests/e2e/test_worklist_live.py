"""The coach worklist in Chromium follows changes without reloading (issue 11 item 4): a
handoff another coach accepts, and a visit a physician signs meanwhile, appear on an open page
in place; a row the coach is typing in is left alone until the typing is done. The page with
the new columns passes axe-core; a screenshot is kept in the artifacts."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from smartapp.db import Database
from smartapp.handoffs import service
from smartapp.handoffs.lifecycle import Change
from smartapp.writeback.actor import Actor
from tests.app.test_worklist_issue11 import sign
from tests.conftest import ARTIFACTS
from tests.e2e.test_accessibility import axe_violations, describe
from tests.worklist_stack import browser_cookies, coach_session, start_worklist_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    handle = start_worklist_stack(
        tmp_path_factory.mktemp("worklist-live"), shared_dir, WORKLIST_POLL_SECONDS=1
    )
    yield handle
    handle.stop()


def test_the_page_follows_other_coaches_and_new_visits_without_reloading(browser, stack):
    first = sign(stack, "P01-pt")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies(browser_cookies(stack, "demo-coach-1"))  # Jordan, signed in
    page = context.new_page()
    page.goto(f"{stack.app.url}/worklist/")
    expect(page.locator("h1.screen-title")).to_have_text("Warm handoffs", timeout=15000)
    row = page.locator(f'tr[data-referral="{first}"]')
    expect(row.locator(".status")).to_have_text("team queue")
    expect(row.locator(".phone")).to_contain_text("(555) 555-0101")
    expect(row.locator(".signer")).to_have_text("Avery Demo, MD")
    page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads

    sam = coach_session(stack, "demo-coach-2")
    sam.post(f"/worklist/{first}/accept")
    expect(row.locator(".status")).to_have_text("accepted", timeout=10000)
    expect(row.locator(".coach")).to_have_text("Sam Lee, CPRS")
    expect(page.locator(".loads")).to_contain_text("Sam Lee, CPRS: 1 of 8")

    second = sign(stack, "P05-pt")  # a physician signs another visit
    new_row = page.locator(f'tr[data-referral="{second}"]')
    expect(new_row).to_be_visible(timeout=10000)
    expect(new_row.locator(".status")).to_have_text("team queue")
    assert page.evaluate("window.__sameDocument") == "yes"  # no reload happened

    # Jordan accepts the new one and starts typing a contact note: a change to another row
    # made meanwhile (Sam's contact attempt) shows, the row being typed in is kept.
    new_row.get_by_role("button", name="Accept").click()
    new_row = page.locator(f'tr[data-referral="{second}"]')
    expect(new_row.locator(".status")).to_have_text("accepted")
    page.evaluate("window.__sameDocument = 'again'")
    new_row.get_by_label("Contact note").fill("Talking with the patient now")
    sam.post(f"/worklist/{first}/contact", result="reached", note="Met at bedside")
    expect(row.locator(".status")).to_have_text("in-progress", timeout=10000)
    # A change to the very row being typed in (a step reported by Handoff itself) waits.
    service.record(
        Database(stack.database_url),
        second,
        Change("update", business_status="appointment-scheduled"),
        Actor("system", "Handoff"),
    )
    page.wait_for_timeout(3000)  # three polls
    note = new_row.get_by_label("Contact note")
    expect(note).to_have_value("Talking with the patient now")
    expect(new_row.locator(".step")).to_have_count(0)
    note.fill("")
    page.locator("h1.screen-title").click()  # done typing: the row may change now
    expect(new_row.locator(".step")).to_have_text("First appointment scheduled", timeout=10000)
    new_row.get_by_label("Contact note").fill("Talking with the patient now")
    new_row.get_by_role("button", name="Record contact").click()  # reached: the note is there
    expect(page.locator(f'tr[data-referral="{second}"] .status')).to_have_text("in-progress")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "worklist-issue11.png"), full_page=True)
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    context.close()
