"""In Chromium: a coach signs in at the identity provider and records the patient's consent to
share with a program on the consent form; the program's staff member signs in (partner role)
on the partner page, sees only the referral shared with them and reports "attended"; the
worklist's state and the log follow. Both pages pass axe-core (no serious or critical)."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import CoachHandoff, Database
from tests.conftest import ARTIFACTS
from tests.e2e.staff_browser import sign_in
from tests.e2e.test_accessibility import axe_violations, describe


def test_coach_records_consent_and_partner_reports_attended(browser, partner_stack):
    stack = partner_stack
    referral_id = stack.referral("P05-pt")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{stack.app_url}/staff/handoffs/{referral_id}/consent", "demo-coach-1")
    expect(page.locator("h1.screen-title")).to_have_text(
        "Consent to share with a community program", timeout=15000
    )
    expect(page.locator("body")).to_contain_text(
        "None recorded: nothing of this referral leaves Handoff"
    )
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    page.get_by_label("Share with (the program's organisation)").select_option("bridge-health")
    page.get_by_label("Care coordination").check()
    page.get_by_role("button", name="Record the patient's consent").click()
    expect(page.locator('li[data-status="active"]')).to_contain_text("Bridge Health")
    expect(page.locator('li[data-status="active"]')).to_contain_text("Jordan Rivera")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "partner-consent.png"), full_page=True)
    context.close()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{stack.app_url}/partner/", "demo-partner")
    expect(page.locator("h1.screen-title")).to_have_text(
        "Referrals to Bridge Health", timeout=15000
    )
    row = page.locator(f'tr[data-task="{referral_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("Test P05")
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    row.get_by_label("What happened").select_option("attended")
    row.get_by_role("button", name="Report").click()
    expect(page.locator(".flash-ok")).to_contain_text("the referral is updated")
    row = page.locator(f'tr[data-task="{referral_id}"]')
    expect(row.locator(".status")).to_have_text("completed")
    expect(row.locator("[data-business-status]")).to_have_text("First appointment attended")
    page.screenshot(path=str(ARTIFACTS / "partner-page.png"), full_page=True)
    context.close()

    with Database(stack.database_url).session() as session:
        row_state = session.get(CoachHandoff, referral_id)
        assert (row_state.status, row_state.business_status) == (
            "completed",
            "appointment-attended",
        )
        events = session.scalars(select(LogEvent).where(LogEvent.type == "handoff-status")).all()
        mine = [e for e in events if e.data.get("referral") == referral_id]
        assert mine[-1].data["partner"] == "bridge-health"
        assert mine[-1].user_ref == "Organization/example-bridge-health"
        assert mine[-1].data["user_name"] == "Bridge Health"


def test_a_staff_member_without_the_partner_role_is_refused(browser, partner_stack):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, f"{partner_stack.app_url}/partner/", "demo-coach-2")
    expect(page.locator("body")).to_contain_text("Your account has no partner role")
    context.close()
