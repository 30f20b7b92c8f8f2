"""The physician's screen in headless Chromium (issue 9): a decline survives an error page and
is what gets signed (item 1); under a slow EHR, Sign answers within its deadline with "queued,
writing" and the page updates by itself when the write lands (item 26)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.app.test_issue9_screen import keys_apart, referral_of
from tests.stacks import start_stack

SIGN_WAIT = 1.5
EHR_DELAY = 6.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp("issue9-browser"),
        shared_dir,
        proxy=True,
        SIGN_WAIT_SECONDS=SIGN_WAIT,
        **keys_apart(tmp_path_factory),
    )
    yield stack
    stack.stop()


def open_screen(page, stack, patient_id: str):
    """The patient's chart, then Handoff in its own tab (the chart's 'new tab' launch)."""
    page.goto(f"{stack.ehr_url}/chart/{patient_id}")
    page.goto(page.locator("#open-in-tab").get_attribute("href"))
    expect(page.locator("h1.screen-title")).to_be_visible(timeout=15000)


def test_a_decline_survives_an_error_page_and_is_what_gets_signed(page, stack):
    """Every choice survives the error page (issue 9 item 1; issue 13: the decline fields
    appear only once Decline is chosen, the program and a typed program are kept too)."""
    open_screen(page, stack, "P01-pt")
    coach = page.locator('fieldset[data-kind="prc-consult"]')
    expect(coach.locator('input[value="accept"]')).to_be_checked()  # opt-out
    expect(coach.locator("#reason-prc-consult")).to_be_hidden()  # until Decline is chosen
    coach.locator('input[value="decline"]').check()
    expect(coach.locator("#reason-prc-consult")).to_be_visible()
    coach.locator("#reason-prc-consult").select_option("patient-declined")
    coach.locator("#reason-text-prc-consult").fill("wants to talk to family first")
    coach.locator('input[name="consult-mode"][value="warm-line"]').check()
    coach.locator("#program").select_option("bridge-clinic")
    coach.locator(".program-pick summary").click()
    coach.locator("#program-other").fill("Church basement group")
    bup = page.locator('fieldset[data-kind="moud-buprenorphine"]')
    bup.locator('input[value="decline"]').check()
    bup.locator("#reason-moud-buprenorphine").select_option("other")  # needs words: none given
    # Naloxone left blank.
    page.get_by_role("button", name="Sign").click()

    errors = page.locator(".errors")
    expect(errors).to_contain_text("Not signed yet")
    expect(errors).to_contain_text("Naloxone kit to take home")
    expect(errors).to_contain_text("Offer buprenorphine: say why in a few words.")
    coach = page.locator('fieldset[data-kind="prc-consult"]')
    expect(coach.locator('input[value="decline"]')).to_be_checked()
    expect(coach.locator('input[value="accept"]')).not_to_be_checked()
    expect(coach.locator("#reason-prc-consult")).to_have_value("patient-declined")
    expect(coach.locator("#reason-text-prc-consult")).to_have_value("wants to talk to family first")
    expect(coach.locator('input[name="consult-mode"][value="warm-line"]')).to_be_checked()
    expect(coach.locator("#program")).to_have_value("bridge-clinic")
    expect(coach.locator("#program-other")).to_have_value("Church basement group")
    expect(coach.locator("#program-other")).to_be_visible()  # the typed program is not hidden
    bup = page.locator('fieldset[data-kind="moud-buprenorphine"]')
    expect(bup.locator('input[value="decline"]')).to_be_checked()
    expect(bup.locator("#reason-moud-buprenorphine")).to_have_value("other")
    naloxone = page.locator('fieldset[data-kind="naloxone-kit"]')
    expect(naloxone.locator('input[value="accept"]')).not_to_be_checked()
    expect(naloxone.locator('input[value="decline"]')).not_to_be_checked()
    expect(naloxone.locator("#reason-naloxone-kit")).to_be_hidden()

    # Fix only the flagged items and sign.
    bup.locator("#reason-text-moud-buprenorphine").fill("wants to think about it")
    naloxone.locator('input[value="accept"]').check()
    page.get_by_role("button", name="Sign").click()
    expect(page.locator("#result")).to_contain_text("Written to the chart", timeout=15000)
    expect(page.locator('fieldset[data-kind="prc-consult"] .decided')).to_have_attribute(
        "data-decision", "declined"
    )
    expect(page.locator('fieldset[data-kind="prc-consult"] .decided')).to_contain_text(
        "Patient declined (wants to talk to family first)"
    )
    expect(page.locator('fieldset[data-kind="moud-buprenorphine"] .decided')).to_contain_text(
        "Other (wants to think about it)"
    )
    decisions = {d["kind"]: d for d in referral_of(stack, "P01-pt").decision["decisions"]}
    assert decisions["prc-consult"]["accepted"] is False
    assert decisions["prc-consult"]["reason"] == "Patient declined"
    assert decisions["moud-buprenorphine"]["accepted"] is False
    assert decisions["moud-buprenorphine"]["text"] == "wants to think about it"
    assert decisions["naloxone-kit"]["accepted"] is True
    assert stack.reader("P01-pt").search("ServiceRequest?patient=P01-pt") == []
    # Only naloxone was drafted: the summary says so, and what is left to do.
    expect(page.locator("#result .after-todo")).to_contain_text(
        "Complete and sign the draft naloxone kit order in the EHR"
    )


def test_sign_answers_within_its_deadline_and_the_page_follows_the_write(page, stack):
    open_screen(page, stack, "P05-pt")
    for fieldset in page.locator("fieldset.suggestion").all():
        fieldset.locator('input[value="accept"]').check()
    stack.proxy.add_fault("delay", method="POST", path="/fhir", seconds=EHR_DELAY)
    started = time.monotonic()
    page.get_by_role("button", name="Sign").click()
    expect(page.locator("#result")).to_contain_text("Queued, writing", timeout=10000)
    assert time.monotonic() - started < SIGN_WAIT + 2.0
    # No reload by the test: the page follows the write and shows it landed.
    expect(page.locator("#result")).to_contain_text(
        "Written to the chart", timeout=(EHR_DELAY + 15) * 1000
    )
    assert time.monotonic() - started >= EHR_DELAY - 0.5
    expect(page.locator("#result li[data-resource-type='ServiceRequest']")).to_have_count(1)
    reader = stack.reader("P05-pt")
    for type_ in ("ServiceRequest", "DocumentReference", "Task"):
        assert len(reader.search(f"{type_}?patient=P05-pt")) == 1, type_
    assert referral_of(stack, "P05-pt").attempts == 1
