"""The launch in a real browser: two tabs for two patients never mix, and no token ever reaches
the browser, a URL after the callback, or a log line."""

from __future__ import annotations

import logging

from playwright.sync_api import expect
from sqlalchemy import select

from smartapp.db import LaunchContext
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.launch_flow import Controls
from tests.smart_helpers import FhirReader, token_for


def open_in_tab(context, sandbox, patient_id: str):
    """Open the patient's chart and launch Handoff in its own tab (the chart's 'new tab' link,
    which carries a launch of its own)."""
    page = context.new_page()
    page.goto(f"{sandbox.url}/chart/{patient_id}")
    page.goto(page.locator("#open-in-tab").get_attribute("href"))
    expect(page.locator("h1.screen-title")).to_be_visible(timeout=15000)
    return page


def sign_accepting_all(page) -> None:
    for fieldset in page.locator("fieldset.suggestion").all():
        fieldset.locator('input[value="accept"]').check()
    page.get_by_role("button", name="Sign").click()
    expect(page.locator("#result")).to_contain_text("Written to the chart", timeout=15000)


def test_two_tabs_two_patients_never_mix(browser, sandbox, handoff):
    Controls(sandbox.url).clear()
    context = browser.new_context()
    first = open_in_tab(context, sandbox, "P14-pt")
    second = open_in_tab(context, sandbox, "P15-pt")
    # Act in both, interleaved: the first tab after the second has launched.
    expect(first.locator(".banner .patient-name")).to_have_text("Test P14")
    expect(second.locator(".banner .patient-name")).to_have_text("Test P15")
    first.reload()
    expect(first.locator(".banner .patient-name")).to_have_text("Test P14")
    expect(
        first.locator('fieldset[data-kind="moud-buprenorphine"] [data-caution]')
    ).to_have_attribute("data-caution", "pregnancy")
    sign_accepting_all(second)
    sign_accepting_all(first)
    expect(first.locator("body")).not_to_contain_text("Test P15")
    expect(second.locator("body")).not_to_contain_text("Test P14")
    context.close()

    for patient, other in (("P14-pt", "P15-pt"), ("P15-pt", "P14-pt")):
        token = token_for(sandbox.url, patient, TEST_READER, TEST_READER_REDIRECT)
        fhir = FhirReader(f"{sandbox.url}/fhir", token["access_token"])
        notes = fhir.search(f"DocumentReference?patient={patient}")
        assert len(notes) == 1
        assert notes[0]["subject"]["reference"] == f"Patient/{patient}"
        assert notes[0]["context"]["encounter"][0]["reference"] == f"Encounter/{patient[:3]}-enc"
        referrals = fhir.search(f"ServiceRequest?patient={patient}")
        assert [r["subject"]["reference"] for r in referrals] == [f"Patient/{patient}"]
        assert all(other not in str(r) for r in referrals + notes)


def test_no_token_in_cookies_html_urls_or_logs(browser, sandbox, handoff, caplog):
    caplog.set_level(logging.DEBUG)
    context = browser.new_context()
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{sandbox.url}/")
    page.locator('tr[data-patient-id="P11-pt"]').get_by_text("Launch Handoff").click()
    frame = page.frame_locator("#handoff-frame")
    expect(frame.locator("h1.screen-title")).to_be_visible(timeout=15000)
    frame_html = page.frame(url=lambda u: "/c/" in u).content()

    services = handoff.app.extensions["handoff"]
    with services.db.session() as session:
        launched = session.scalars(
            select(LaunchContext).where(LaunchContext.patient_id == "P11-pt")
        ).all()[-1]
    token = services.cipher.decrypt(launched.token_ciphertext, launched.id)
    secrets = [token["access_token"], token["refresh_token"], token["id_token"]]
    assert all(len(s) > 16 for s in secrets)

    cookies = " ".join(c["value"] for c in context.cookies())
    logs = "\n".join(r.getMessage() for r in caplog.records)
    callback_seen = [i for i, u in enumerate(urls) if "/callback" in u]
    assert callback_seen, "the launch went through the callback"
    after_callback = urls[callback_seen[0] + 1 :]
    for secret in secrets:
        assert secret not in cookies
        assert secret not in frame_html
        assert secret not in page.content()
        assert not any(secret in u for u in after_callback)
        assert secret not in logs
    # Nor the authorization code, after the callback or in logs.
    code = urls[callback_seen[0]].split("code=")[1].split("&")[0]
    assert not any(code in u for u in after_callback)
    assert code not in logs
    context.close()
