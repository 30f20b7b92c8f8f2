"""SMART scopes on the FHIR API: v1 and v2, patient compartment, query-narrowed grants."""

from __future__ import annotations

import requests

from tests.sandbox.conftest import RunningSandbox

SR = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "code": {"text": "Referral to peer support"},
}


def test_patient_scope_confines_reads_to_the_launch_patient(
    sandbox: RunningSandbox, p01_api: requests.Session
) -> None:
    assert p01_api.get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10).status_code == 200
    other = p01_api.get(f"{sandbox.fhir}/Patient/P02-pt", timeout=10)
    assert other.status_code == 403
    assert other.json()["resourceType"] == "OperationOutcome"
    assert p01_api.get(f"{sandbox.fhir}/Condition/P02-cond1", timeout=10).status_code == 403
    everything = p01_api.get(f"{sandbox.fhir}/Condition", timeout=10).json()
    assert [e["resource"]["id"] for e in everything["entry"]] == ["P01-cond1"]
    # Shared directory data (the user's own Practitioner) stays readable.
    doctor = p01_api.get(f"{sandbox.fhir}/Practitioner/demo-ed-physician", timeout=10)
    assert doctor.status_code == 200
    assert doctor.json()["name"][0]["text"] == "Avery Demo, MD"


def test_write_outside_granted_scopes_is_403(
    sandbox: RunningSandbox, p01_api: requests.Session
) -> None:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/P01-pt"},
        "code": {"text": "x"},
    }
    response = p01_api.post(f"{sandbox.fhir}/Condition", json=condition, timeout=10)
    assert response.status_code == 403
    assert "create on Condition" in response.json()["issue"][0]["diagnostics"]
    patient = p01_api.get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10).json()
    assert (
        p01_api.put(f"{sandbox.fhir}/Patient/P01-pt", json=patient, timeout=10).status_code == 403
    )


def test_write_into_another_patients_compartment_is_403(
    sandbox: RunningSandbox, p01_api: requests.Session
) -> None:
    other = dict(SR, subject={"reference": "Patient/P02-pt"})
    response = p01_api.post(f"{sandbox.fhir}/ServiceRequest", json=other, timeout=10)
    assert response.status_code == 403
    assert "P02-pt" in response.json()["issue"][0]["diagnostics"]
    mine = dict(SR, subject={"reference": "Patient/P01-pt"})
    created = p01_api.post(f"{sandbox.fhir}/ServiceRequest", json=mine, timeout=10)
    assert created.status_code == 201, created.text


def test_v1_scopes(sandbox: RunningSandbox) -> None:
    token = sandbox.token("P03-pt", "launch patient/Condition.read patient/ServiceRequest.write")
    api = sandbox.api(token)
    assert api.get(f"{sandbox.fhir}/Condition", timeout=10).json()["total"] == 1
    assert api.get(f"{sandbox.fhir}/Observation", timeout=10).status_code == 403
    created = api.post(
        f"{sandbox.fhir}/ServiceRequest",
        json=dict(SR, subject={"reference": "Patient/P03-pt"}),
        timeout=10,
    )
    assert created.status_code == 201
    # write without read: the created ServiceRequest cannot be read back
    assert (
        api.get(f"{sandbox.fhir}/ServiceRequest/{created.json()['id']}", timeout=10).status_code
        == 403
    )


def test_v2_read_without_search(sandbox: RunningSandbox) -> None:
    api = sandbox.api(sandbox.token("P03-pt", "launch patient/Condition.r"))
    assert api.get(f"{sandbox.fhir}/Condition/P03-cond1", timeout=10).status_code == 200
    assert api.get(f"{sandbox.fhir}/Condition", timeout=10).status_code == 403


def test_v2_scope_query_narrows_the_grant(sandbox: RunningSandbox) -> None:
    lab = sandbox.api(sandbox.token("P15-pt", "launch patient/Observation.rs?category=laboratory"))
    bundle = lab.get(f"{sandbox.fhir}/Observation", timeout=10).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["P15-uds2"]
    survey = sandbox.api(sandbox.token("P15-pt", "launch patient/Observation.rs?category=survey"))
    assert survey.get(f"{sandbox.fhir}/Observation", timeout=10).json()["total"] == 0
    assert survey.get(f"{sandbox.fhir}/Observation/P15-uds2", timeout=10).status_code == 403


def test_user_scope_sees_every_chart(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    assert user_api.get(f"{sandbox.fhir}/Condition/P02-cond1", timeout=10).status_code == 200
    assert user_api.get(f"{sandbox.fhir}/Condition", timeout=10).json()["total"] == 17
