"""In Chromium: the physician's screen shows what to expect of the coach team next to the coach
consult, before Sign; a supervisor signs in at the identity provider, sees the team queue with
coach names (axe-core: no serious or critical violation) and gives a waiting handoff to a coach
with the mouse."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests import launch_flow
from tests.conftest import ARTIFACTS
from tests.e2e.test_accessibility import axe_violations, describe, open_screen
from tests.launch_flow import Controls

EXPECTED = re.compile(
    r"^(A coach is available now\.|(All coaches on shift are at their caseload|No coach is on "
    r"shift now): the handoff will wait in the team queue; warm line \(555\) 555-0142\.)$"
)


def test_the_physician_sees_the_coach_expectation_before_sign(browser, sandbox, handoff):
    Controls(sandbox.url).clear()
    context, page = open_screen(browser, sandbox, "P24-pt")
    consult = page.locator('fieldset[data-kind="prc-consult"]')
    line = consult.locator(".coach-expectation")
    expect(line).to_be_visible()
    assert EXPECTED.match(line.inner_text().strip()), line.inner_text()
    expect(page.locator("button.sign")).to_be_visible()  # not signed yet
    ARTIFACTS.mkdir(exist_ok=True)
    consult.screenshot(path=str(ARTIFACTS / "screen-coach-expectation.png"))
    context.close()


def test_a_supervisor_gives_a_queued_handoff_to_a_coach(browser, sandbox, handoff):
    Controls(sandbox.url).clear()
    launch_flow.sign_all(launch_flow.full(handoff.url, sandbox.url, "P25-pt"), handoff.url)
    coach = browser.new_context()
    coach_page = coach.new_page()
    coach_page.goto(f"{handoff.url}/worklist/")
    coach_page.locator('button[name="user"][value="demo-coach-2"]').click()  # Sam: on shift
    expect(coach_page.locator("h1.screen-title")).to_have_text("Warm handoffs", timeout=15000)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{handoff.url}/supervisor/")
    page.locator('button[name="user"][value="demo-supervisor"]').click()
    expect(page.locator("h1.screen-title")).to_have_text("Coach program", timeout=15000)
    expect(page.locator(".staff-bar")).to_contain_text("Casey Morgan, LCSW")
    row = page.locator("#queue tr", has_text="Test P25")
    expect(row).to_be_visible()
    violations = axe_violations(page)
    assert violations == [], describe(violations)

    row.get_by_label("Coach").select_option(label="Sam Lee, CPRS")
    row.get_by_label("Note").fill("Sam is free")
    row.get_by_role("button", name="Assign").click()
    expect(page.locator(".flash")).to_have_text("Handoff reassigned to Sam Lee, CPRS.")
    expect(page.locator("#queue tr", has_text="Test P25")).to_have_count(0)
    expect(page.locator("#held")).to_contain_text("Test P25 · Sam Lee, CPRS · accepted")
    expect(page.locator("#caseload")).to_contain_text("Sam Lee, CPRS")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "supervisor.png"), full_page=True)
    coach_page.reload()
    expect(coach_page.locator('tr[data-patient-id="P25-pt"] .status')).to_have_text("accepted")
    coach.close()
    context.close()
