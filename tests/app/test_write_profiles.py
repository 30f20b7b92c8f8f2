"""Each write profile end to end in headless Chromium against a sandbox that behaves like that
EHR; what lands is read back and checked field by field and as FHIR R4 (fhirclient models)."""

from __future__ import annotations

import base64

import pytest
from fhirclient.models.communication import Communication
from fhirclient.models.documentreference import DocumentReference
from fhirclient.models.medicationrequest import MedicationRequest
from fhirclient.models.provenance import Provenance
from playwright.sync_api import expect
from sqlalchemy import select

from smartapp.db import Referral
from tests.conftest import ARTIFACTS
from tests.stacks import COACH_POOL, start_stack

MODELS = {
    "DocumentReference": DocumentReference,
    "Communication": Communication,
    "Provenance": Provenance,
    "MedicationRequest": MedicationRequest,
}


@pytest.fixture(scope="module", params=["epic", "oracle-health"])
def stack(request, tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp(request.param),
        shared_dir,
        behaviour=request.param,
        profile=request.param,
    )
    stack.name = request.param
    yield stack
    stack.stop()


def sign_in_browser(browser, stack, patient_id: str):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(f"{stack.ehr.url}/chart/{patient_id}")
    page.goto(page.locator("#open-in-tab").get_attribute("href"))
    expect(page.locator("h1.screen-title")).to_be_visible(timeout=15000)
    for fieldset in page.locator("fieldset.suggestion").all():
        fieldset.locator('input[name^="decision-"][value="accept"]').check()
    page.locator("#program").select_option("bridge-clinic")
    page.get_by_role("button", name="Sign").click()
    expect(page.locator("#result")).to_be_visible(timeout=15000)
    return context, page


def test_profile_end_to_end(browser, stack):
    context, page = sign_in_browser(browser, stack, "P02-pt")
    result = page.locator("#result")
    expect(result).to_contain_text("Written to the chart")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"profile-{stack.name}.png"), full_page=True)
    written = [
        (li.get_attribute("data-resource-type"), li.locator("code").text_content())
        for li in result.locator("li[data-resource-type]").all()
    ]
    kept = sorted(
        li.get_attribute("data-kept-type") for li in result.locator("li[data-kept-type]").all()
    )
    context.close()

    fhir = stack.reader("P02-pt")
    landed = {}
    for type_, id_ in written:
        resource = fhir.get(f"{type_}/{id_}")
        MODELS[type_](resource, strict=True)  # valid FHIR R4
        landed.setdefault(type_, []).append(resource)
        labels = {s["code"] for s in resource["meta"]["security"]}
        assert labels >= {"R", "OPIOIDUD"}
    doc = landed["DocumentReference"][0]
    note = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    assert doc["content"][0]["attachment"]["contentType"].startswith("text/plain")
    assert doc["context"]["encounter"][0]["reference"] == "Encounter/P02-enc"
    assert doc["context"]["period"]["end"]
    assert "Example Bridge Clinic" in note and "Peer recovery coach consult" in note
    # No ServiceRequest or Task was sent where the EHR takes none: kept in Handoff, shown.
    assert fhir.search("ServiceRequest?patient=P02-pt") == []
    assert fhir.search("Task?patient=P02-pt") == []

    if stack.name == "epic":
        assert sorted(landed) == ["DocumentReference", "MedicationRequest"]
        assert doc["docStatus"] == "preliminary"
        assert kept == ["Provenance", "ServiceRequest", "Task"]
        assert {m["status"] for m in landed["MedicationRequest"]} == {"draft"}
    else:
        assert sorted(landed) == ["Communication", "DocumentReference", "Provenance"]
        assert doc["docStatus"] == "final"
        comm = landed["Communication"][0]
        assert comm["recipient"] == [COACH_POOL]
        assert comm["subject"]["reference"] == "Patient/P02-pt"
        # The ServiceRequest it is based on stayed in Handoff: a logical reference.
        assert "reference" not in comm["basedOn"][0]
        assert comm["basedOn"][0]["identifier"]["system"] == "urn:handoff:referral"
        prov = landed["Provenance"][0]
        targets = [t.get("reference") for t in prov["target"]]
        assert f"DocumentReference/{doc['id']}" in targets
        assert kept == ["MedicationRequest", "MedicationRequest", "ServiceRequest", "Task"]


def test_retry_without_conditional_create_searches_first(stack):
    """The EHR ignores If-None-Exist: a second delivery of a landed referral must find the
    note by identifier instead of writing it twice."""
    from smartapp.launch.sessions import client_for_referral
    from smartapp.writeback import outbox

    services = stack.app.app.extensions["handoff"]
    with services.db.session() as session:
        referral = session.scalars(select(Referral).where(Referral.patient_id == "P02-pt")).one()
        referral.status = "queued"  # as if the answer to the first write had been lost
        for op in referral.plan["operations"]:
            if op["mode"] == "rest":
                op["status"] = "pending"
        referral.plan = dict(referral.plan)
    with stack.app.app.app_context():
        again = outbox.deliver(
            services.db,
            referral.id,
            lambda r, force_refresh=False: client_for_referral(services, r, force_refresh),
        )
    assert again.status == "written"
    fhir = stack.reader("P02-pt")
    assert len(fhir.search("DocumentReference?patient=P02-pt")) == 1
