"""WCAG 2.1 AA on the physician's screen: axe-core finds no serious or critical violation, and
a physician who uses only the keyboard can sign a referral."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from smartapp.config import REPO_ROOT
from tests.conftest import ARTIFACTS
from tests.launch_flow import Controls

AXE = REPO_ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


def axe_violations(page) -> list[dict]:
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: `python3 dev.py test` installs it (npm ci in tests/js)")
    # Injected over the DevTools protocol: the page's CSP (script-src 'self') stays in force.
    page.evaluate(Path(AXE).read_text() + "\n;void 0")
    result = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def open_screen(browser, sandbox, patient_id: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{sandbox.url}/chart/{patient_id}")
    page.goto(page.locator("#open-in-tab").get_attribute("href"))
    expect(page.locator("h1.screen-title")).to_be_visible(timeout=15000)
    return context, page


def describe(violations: list[dict]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
    )


def test_screen_has_no_serious_accessibility_violation(browser, sandbox, handoff):
    Controls(sandbox.url).clear()
    context, page = open_screen(browser, sandbox, "P14-pt")  # cautions, variants, evidence
    for summary in page.locator("summary").all():
        summary.click()
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    context.close()


def test_keyboard_only_physician_signs_a_referral(browser, sandbox, handoff):
    Controls(sandbox.url).clear()
    context, page = open_screen(browser, sandbox, "P12-pt")
    page.locator("body").focus()
    # Walk the page with Tab only; accept each suggestion with the keyboard as we reach it.
    signed = False
    for _ in range(120):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => ({tag: document.activeElement.tagName, type: document.activeElement.type,"
            " name: document.activeElement.name, value: document.activeElement.value,"
            " text: document.activeElement.innerText,"
            " outline: getComputedStyle(document.activeElement).outlineStyle})"
        )
        if focused["type"] == "radio" and focused["name"].startswith("decision-"):
            # Arrow keys move within a radio group; Space selects: pick "accept".
            if focused["value"] != "accept":
                page.keyboard.press("ArrowLeft")
            page.keyboard.press("Space")
        if focused["tag"] == "BUTTON" and focused["text"].strip() == "Sign":
            assert focused["outline"] != "none"  # a visible focus indicator
            page.keyboard.press("Enter")
            signed = True
            break
    assert signed, "the Sign button was not reachable by keyboard"
    expect(page.locator("#result")).to_contain_text("Written to the chart", timeout=15000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "keyboard-signed.png"), full_page=True)
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    context.close()
