"""patient-view for every public chart over HTTP, with the prefetch the tests' CDS client made
from the sandbox EHR with the service's own templates: the card's offer (suggestion kinds,
variants, cautions, evidence; withheld kinds and reasons) equals expected.json, and a chart
with nothing to offer gets no card. Also: a missing prefetch is read from fhirServer with the
call's fhirAuthorization (the same offer), and the FHIR server down gives an answer within
the budget with no card."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from smartapp.cdshooks.models import HookResponse
from tests.cdshooks.cds_client import PATIENT_VIEW, prefetch_from
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.shared import SCENARIOS_DIR
from tests.smart_helpers import token_for

EXPECTED = json.loads((SCENARIOS_DIR / "expected.json").read_text())["cases"]


def check_offer(card_offer: dict, case: dict) -> None:
    got = {s["kind"]: s for s in card_offer["suggestions"]}
    assert set(got) == {e["kind"] for e in case["expected"]}
    for want in case["expected"]:
        have = got[want["kind"]]
        if "variant" in want:
            assert have["variant"] == want["variant"], want["kind"]
        if "cautions" in want:
            assert have["cautions"] == want["cautions"], want["kind"]
        if want.get("evidence_any"):
            assert set(want["evidence_any"]) & set(have["evidence"]), want["kind"]
    withheld = {(w["kind"], w["reason"]) for w in card_offer["withheld"]}
    assert withheld == {(w["kind"], w["reason"]) for w in case.get("withheld", [])}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_patient_view_offer_equals_expected(cds, name):
    case = EXPECTED[name]
    patient, encounter = case["patient"], case["encounter"]
    prefetch = prefetch_from(cds.client.discovery(), PATIENT_VIEW, cds.reader(patient), patient)
    # a patient-view carrying its encounter (the ED visit in progress)
    status, answer = cds.client.call(cds.client.request(patient, encounter, prefetch))
    assert status == 200, answer
    if not case["expected"]:
        assert answer["cards"] == []
        return
    (card,) = answer["cards"]
    assert len(card["summary"]) < 140
    assert card["source"]["label"].startswith("Handoff (rule pack ")
    assert card["selectionBehavior"] == "any"
    check_offer(card["extension"]["handoff-offer"], case)
    recommended = {s["label"]: s.get("isRecommended") for s in card["suggestions"]}
    assert any(recommended.values()) or "prc-consult" not in {
        s["kind"] for s in card["extension"]["handoff-offer"]["suggestions"]
    }
    (link,) = card["links"]
    assert link["type"] == "smart" and json.loads(link["appContext"])["handoff_visit"]
    assert {r["code"] for r in card["overrideReasons"]} >= {"patient-declined", "other"}
    for suggestion in card["suggestions"]:
        for action in suggestion.get("actions", []):
            resource = action["resource"]
            assert resource["status"] == "draft"
            assert "dosageInstruction" not in resource  # never a dose


def test_missing_prefetch_is_fetched_with_fhir_authorization(cds):
    case = EXPECTED["P01-oud-withdrawal"]
    patient = case["patient"]
    prefetch = prefetch_from(cds.client.discovery(), PATIENT_VIEW, cds.reader(patient), patient)
    partial = {k: v for k, v in prefetch.items() if k in ("patient", "encounters")}
    body = cds.client.request(patient, case["encounter"], partial, cds.authorization(patient))
    status, answer = cds.client.call(body)
    assert status == 200, answer
    (card,) = answer["cards"]
    check_offer(card["extension"]["handoff-offer"], case)
    # Without fhirAuthorization, what was not prefetched is unread, and the engine is told
    # (chart completeness): buprenorphine carries the chart-incomplete caution.
    no_medications = {
        k: v for k, v in prefetch.items() if not k.startswith("medication") and k != "allergies"
    }
    status, answer = cds.client.call(cds.client.request(patient, case["encounter"], no_medications))
    assert status == 200
    (card,) = answer["cards"]
    offer = {s["kind"]: s for s in card["extension"]["handoff-offer"]["suggestions"]}
    assert "chart-incomplete" in offer["moud-buprenorphine"]["cautions"]
    assert "neither prefetched nor let Handoff read" in card["detail"]


def test_fhir_server_down_answers_within_the_budget_with_no_card(cds):
    patient = "P05-pt"
    authorization = cds.authorization(patient)
    body = cds.client.request(patient, "P05-enc", None, authorization)
    proxy = cds.stack.proxy
    assert proxy is not None
    # The EHR takes the batch and never answers (held past the budget), then refuses.
    proxy.add_fault("blackhole", path="/fhir", seconds=8)
    started = time.monotonic()
    status, answer = cds.client.call(body)
    took = time.monotonic() - started
    assert status == 200
    HookResponse.model_validate(answer)
    assert answer["cards"] == []
    assert took < 3.0 + 1.0  # the stack's budget (3 s), and the round trip
    # Connections refused: the patient cannot be read, no card (at once).
    proxy.refuse(3)
    started = time.monotonic()
    status, answer = cds.client.call(cds.client.request(patient, "P05-enc", None, authorization))
    assert status == 200 and answer["cards"] == []
    assert time.monotonic() - started < 4.0
    proxy.clear_faults()
    while proxy.refusing:  # the EHR back for the next test
        time.sleep(0.1)


def naloxone_order(code: str) -> dict:
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]
        },
        "subject": {"reference": "Patient/P13-pt"},
    }
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}


def test_order_hooks_answer_only_for_the_trigger_orders(cds):
    patient, encounter = "P13-pt", "P13-enc"
    service = "handoff-order-select"
    prefetch = prefetch_from(cds.client.discovery(), service, cds.reader(patient), patient)
    naloxone = cds.client.request(
        patient,
        encounter,
        prefetch,
        hook="order-select",
        selections=["MedicationRequest/draft-1"],
        draftOrders=naloxone_order("1725059"),  # naloxone 4 mg nasal spray (pack value set)
    )
    status, answer = cds.client.call(naloxone, service)
    assert status == 200, answer
    (card,) = answer["cards"]
    kinds = {s["kind"] for s in card["extension"]["handoff-offer"]["suggestions"]}
    assert "prc-consult" in kinds
    other = dict(naloxone, hookInstance=str(uuid.uuid4()))
    other["context"] = naloxone["context"] | {"draftOrders": naloxone_order("197361")}
    status, answer = cds.client.call(other, service)
    assert status == 200 and answer["cards"] == []  # a code outside the trigger value sets
    # the hook must be the service's own
    status, answer = cds.client.call(naloxone, PATIENT_VIEW)
    assert status == 400


def test_encounter_start_offers_the_same_as_patient_view(cds):
    case = EXPECTED["P12-overdose-naloxone-given"]
    patient, encounter = case["patient"], case["encounter"]
    service = "handoff-encounter-start"
    prefetch = prefetch_from(cds.client.discovery(), service, cds.reader(patient), patient)
    body = cds.client.request(patient, encounter, prefetch, hook="encounter-start")
    status, answer = cds.client.call(body, service)
    assert status == 200, answer
    (card,) = answer["cards"]
    check_offer(card["extension"]["handoff-offer"], case)


def methadone_order(medication: str, patient: str, encounter: str) -> dict:
    """A methadone order that references its Medication (as Epic's do) instead of a code."""
    return {
        "resourceType": "MedicationRequest",
        "id": "cds-methadone-order",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": f"Medication/{medication}"},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "authoredOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def test_referenced_medications_are_read_or_the_orders_count_unread(cds):
    case = EXPECTED["P01-oud-withdrawal"]
    patient, encounter = case["patient"], case["encounter"]
    prefetch = prefetch_from(cds.client.discovery(), PATIENT_VIEW, cds.reader(patient), patient)
    writer = token_for(
        cds.stack.ehr_url,
        patient,
        TEST_READER,
        TEST_READER_REDIRECT,
        "launch openid fhirUser patient/*.cruds user/*.cruds",
    )
    methadone = {
        "resourceType": "Medication",
        "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6813"}]
        },
    }
    made = requests.post(
        f"{cds.fhir_base}/Medication",
        json=methadone,
        headers={
            "Authorization": f"Bearer {writer['access_token']}",
            "Content-Type": "application/fhir+json",
        },
        timeout=10,
    )
    assert made.status_code == 201, made.text
    medication = made.json()["id"]
    orders = prefetch["medicationRequests"]
    orders["entry"] = orders.get("entry", []) + [
        {"resource": methadone_order(medication, patient, encounter)}
    ]
    # With fhirAuthorization the Medication is read: methadone, so on MOUD (no buprenorphine)
    body = cds.client.request(patient, encounter, prefetch, cds.authorization(patient))
    status, answer = cds.client.call(body)
    assert status == 200, answer
    (card,) = answer["cards"]
    offer = card["extension"]["handoff-offer"]
    assert ("moud-buprenorphine", "on-moud") in {
        (w["kind"], w["reason"]) for w in offer["withheld"]
    }
    # Without it the order's code is unknown: its type is unread (the chart-incomplete caution)
    status, answer = cds.client.call(cds.client.request(patient, encounter, prefetch))
    (card,) = answer["cards"]
    offer = {s["kind"]: s for s in card["extension"]["handoff-offer"]["suggestions"]}
    assert "chart-incomplete" in offer["moud-buprenorphine"]["cautions"]
