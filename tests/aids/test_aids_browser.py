"""The COWS calculator in Chromium (issue 13 item 4, item 8's keyboard and axe-core bar): a
physician opens it, answers the 11 items with the keyboard only (Tab between items, arrow keys
within one), sees the running total and band, records it, and the screen comes back with
buprenorphine's variant turned to ED induction; axe-core finds no serious or critical issue
before or after. A stack of its own (its own sandbox and Handoff), so no other browser test
signs or scores these patients."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from smartapp.aids import data
from smartapp.engine.location import CHECKOUT_RULES
from tests.aids.helpers import COWS_14, cows_observations
from tests.conftest import ARTIFACTS
from tests.e2e.test_accessibility import axe_violations, describe
from tests.stacks import start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("aids-browser"), shared_dir)
    yield stack
    stack.stop()


def open_screen(browser, stack, patient_id: str, width: int = 600):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(f"{stack.ehr_url}/chart/{patient_id}")
    page.goto(page.locator("#open-in-tab").get_attribute("href"))
    expect(page.locator("h1.screen-title")).to_be_visible(timeout=15000)
    return context, page


def focused(page) -> dict:
    return page.evaluate(
        "() => ({tag: document.activeElement.tagName, name: document.activeElement.name,"
        " value: document.activeElement.value, checked: document.activeElement.checked,"
        " text: document.activeElement.innerText,"
        " outline: getComputedStyle(document.activeElement).outlineStyle})"
    )


def test_cows_by_keyboard_turns_the_start_to_ed_induction(browser, stack):
    scale = data.cows_scale(CHECKOUT_RULES)
    context, page = open_screen(browser, stack, "P02-pt")
    expect(page.locator('[data-variant="home-initiation"]')).to_have_count(1)
    summary = page.locator("#aid-cows summary")
    summary.focus()
    page.keyboard.press("Enter")  # opens the calculator
    expect(page.locator("#aid-cows fieldset.cows-item").first).to_be_visible()
    violations = axe_violations(page)
    assert violations == [], describe(violations)

    for number, item in enumerate(scale.items):
        page.keyboard.press("Tab")
        now = focused(page)
        assert (now["tag"], now["name"]) == ("INPUT", f"cows-{item.id}"), (item.id, now)
        index = [a.score for a in item.answers].index(COWS_14[item.id])
        if index == 0:
            page.keyboard.press("Space")
        for _ in range(index):
            page.keyboard.press("ArrowDown")  # moves to, and checks, the next answer
        now = focused(page)
        assert now["checked"] and now["value"] == str(COWS_14[item.id]), (item.id, now)
        if number == 0:
            expect(page.locator("#cows-total")).to_contain_text("10 of 11 items still to answer")
    expect(page.locator("#cows-total")).to_have_text("14 (moderate)")

    page.keyboard.press("Tab")
    button = focused(page)
    assert button["tag"] == "BUTTON" and button["text"].strip() == "Record COWS"
    assert button["outline"] != "none"  # a visible focus indicator
    with page.expect_navigation():
        page.keyboard.press("Enter")

    expect(page.locator("#aid-cows-done")).to_contain_text("COWS 14 (moderate)")
    expect(page.locator('[data-variant="ed-induction"]')).to_have_count(1)
    expect(page.locator("#aid-cows")).to_have_count(0)  # a COWS counts now: no calculator
    [obs] = cows_observations(stack, "P02-pt")
    assert obs["valueQuantity"]["value"] == 14
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "aids-cows-recorded.png"), full_page=True)
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    context.close()


def test_dsm5_checklist_is_accessible_and_counts(browser, stack):
    context, page = open_screen(browser, stack, "P05-pt")
    page.locator("#aid-dsm5 summary").click()
    for criterion in ("craving", "tolerance"):
        page.locator(f'#aid-dsm5 input[value="{criterion}"]').check()
    expect(page.locator("#dsm5-count")).to_have_text("2 (mild)")
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    with page.expect_navigation():
        page.locator("#aid-dsm5 button.aid-submit").click()
    expect(page.locator("#aid-dsm5 [data-dsm5-count]")).to_contain_text("2 of 11")
    context.close()
