"""End to end in headless Chromium: sandbox chart -> EHR launch -> authorization -> suggestions
-> Sign, then the written ServiceRequest and DocumentReference read back over FHIR."""

from __future__ import annotations

import base64

from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, TEST_READER, TEST_READER_REDIRECT
from tests.smart_helpers import FhirReader, token_for


def launch_from_chart(page, sandbox, patient_id: str):
    page.goto(f"{sandbox.url}/")
    page.locator(f'tr[data-patient-id="{patient_id}"]').get_by_text("Launch Handoff").click()
    frame = page.frame_locator("#handoff-frame")
    expect(frame.locator("h1.screen-title")).to_be_visible(timeout=15000)
    return frame


def test_p01_launch_suggest_sign_and_read_back(page, sandbox, handoff):
    frame = launch_from_chart(page, sandbox, "P01-pt")

    # Three suggestions, with the variant and evidence the labelled case expects.
    kinds = frame.locator("fieldset.suggestion").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds == ["prc-consult", "moud-buprenorphine", "naloxone-kit"]
    bup = frame.locator('fieldset[data-kind="moud-buprenorphine"]')
    expect(bup.locator("[data-variant]")).to_have_attribute("data-variant", "ed-induction")
    prc = frame.locator('fieldset[data-kind="prc-consult"]')
    prc.locator(".evidence summary").click()
    evidence = prc.locator('.evidence li[data-reference="Condition/P01-cond1"]')
    expect(evidence).to_be_visible()
    expect(evidence).to_contain_text("F11.20")
    # Opt-out: the coach referral is pre-selected; decline reasons are offered.
    expect(prc.locator('input[value="accept"]')).to_be_checked()
    options = prc.locator("select option").all_inner_texts()
    assert "Patient declined" in " ".join(options)
    expect(frame.locator(".banner .patient-name")).to_contain_text("P01")

    # The medication suggestions need the physician's explicit word.
    bup.locator('input[value="accept"]').check()
    frame.locator('fieldset[data-kind="naloxone-kit"] input[value="accept"]').check()
    frame.locator('input[name="consult-mode"][value="telehealth"]').check()
    # The community program comes from the catalog, filtered to what is open and taking patients.
    frame.locator(".program-pick summary").click()
    frame.locator("#program-service").select_option("buprenorphine")
    frame.locator("#program-new").check()
    visible = frame.locator("#program option:not([hidden])").all_inner_texts()
    assert any("Example Bridge Clinic" in v for v in visible)
    assert not any("Naltrexone" in v or "Residential" in v for v in visible)
    frame.locator("#program").select_option("bridge-clinic")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "p01-suggestions.png"), full_page=True)
    frame.get_by_role("button", name="Sign").click()

    result = frame.locator("#result")
    expect(result).to_contain_text("Written to the chart", timeout=15000)
    result.locator(".ids summary").click()  # resource ids behind the details toggle
    items = [
        (li.get_attribute("data-resource-type"), li.locator("code").text_content())
        for li in result.locator("li[data-resource-type]").all()
    ]
    written = dict(items)
    assert sorted(t for t, _ in items) == [
        "DocumentReference",
        "MedicationRequest",
        "MedicationRequest",
        "Provenance",
        "ServiceRequest",
        "Task",
    ]
    page.screenshot(path=str(ARTIFACTS / "p01-signed.png"), full_page=True)

    # Read back over HTTP from the sandbox FHIR server, with a token of our own.
    token = token_for(sandbox.url, "P01-pt", TEST_READER, TEST_READER_REDIRECT)
    fhir = FhirReader(f"{sandbox.url}/fhir", token["access_token"])

    # Everything written validates as FHIR R4 (fhirclient's models, strict).
    from fhirclient.models.documentreference import DocumentReference
    from fhirclient.models.medicationrequest import MedicationRequest
    from fhirclient.models.provenance import Provenance
    from fhirclient.models.servicerequest import ServiceRequest
    from fhirclient.models.task import Task

    models = {
        "ServiceRequest": ServiceRequest,
        "DocumentReference": DocumentReference,
        "Task": Task,
        "Provenance": Provenance,
        "MedicationRequest": MedicationRequest,
    }
    for type_, id_ in items:
        models[type_](fhir.get(f"{type_}/{id_}"), strict=True)

    sr = fhir.get(f"ServiceRequest/{written['ServiceRequest']}")
    assert sr["status"] == "active" and sr["intent"] == "order" and sr["priority"] == "urgent"
    assert sr["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert sr["code"]["coding"][0]["code"] == "461481000124109"
    assert sr["category"][0]["coding"][0]["code"] == "410606002"
    assert sr["subject"]["reference"] == "Patient/P01-pt"
    assert sr["encounter"]["reference"] == "Encounter/P01-enc"
    assert sr["requester"]["reference"] == "Practitioner/demo-ed-physician"
    assert {"reference": "Condition/P01-cond1"} in sr["reasonReference"]
    assert {s["code"] for s in sr["meta"]["security"]} >= {"R", "OPIOIDUD"}
    assert sr["identifier"][0]["system"] == "urn:handoff:referral"

    doc = fhir.get(f"DocumentReference/{written['DocumentReference']}")
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert doc["type"]["coding"][0]["code"] == "11488-4"
    assert doc["subject"]["reference"] == "Patient/P01-pt"
    assert doc["context"]["encounter"][0]["reference"] == "Encounter/P01-enc"
    assert (
        doc["context"]["related"][0]["reference"] == f"ServiceRequest/{written['ServiceRequest']}"
    )
    assert doc["context"]["period"]["end"]
    assert {s["code"] for s in doc["meta"]["security"]} >= {"R", "OPIOIDUD"}
    note = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")
    assert "Peer recovery coach consult" in note
    assert "by telehealth" in note
    assert "Example Bridge Clinic" in note
    assert "ed induction" in note
    assert "F11.20" in note

    task = fhir.search(f"Task?patient=P01-pt&_id={written['Task']}")
    assert task and task[0]["focus"]["reference"] == f"ServiceRequest/{written['ServiceRequest']}"
    assert task[0]["status"] == "requested"

    # Draft medication proposals for the physician to complete and sign in the EHR: no dose.
    drafts = [fhir.get(f"MedicationRequest/{i}") for t, i in items if t == "MedicationRequest"]
    assert {d["medicationCodeableConcept"]["coding"][0]["code"] for d in drafts} == {"1819", "7242"}
    assert all(d["status"] == "draft" and d["intent"] == "proposal" for d in drafts)
    assert all("dosageInstruction" not in d for d in drafts)

    # The same visit's ServiceRequest exists once, and the physician sees it in the chart.
    referrals = fhir.search(
        "ServiceRequest?patient=P01-pt&code=http://snomed.info/sct|461481000124109"
    )
    assert len(referrals) == 1
    page.goto(f"{sandbox.url}/chart/P01-pt")
    expect(page.locator("body")).to_contain_text("Example Bridge Clinic")

    # A re-launch for the same visit shows what was done and where it stands, not new work.
    again = page.frame_locator("#handoff-frame")
    expect(again.locator("#result")).to_contain_text("Written to the chart", timeout=15000)
    expect(again.locator('fieldset[data-kind="prc-consult"] .decided')).to_contain_text(
        "Accepted: coach consult telehealth, program: Example Bridge Clinic"
    )
    expect(again.locator('fieldset[data-kind="moud-buprenorphine"] .decided')).to_contain_text(
        "Accepted"
    )
    expect(again.get_by_role("button", name="Sign")).to_have_count(0)


def test_p06_no_suggestion_signs_nothing_new(page, sandbox, handoff):
    frame = launch_from_chart(page, sandbox, "P06-pt")
    expect(frame.locator("fieldset.suggestion")).to_have_count(0)
    expect(frame.locator("p.none")).to_contain_text("No suggestion")
