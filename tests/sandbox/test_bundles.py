"""Batch and transaction Bundles: chart read in one batch, Handoff's write-back transaction."""

from __future__ import annotations

import base64
import uuid

import requests

from tests.sandbox.conftest import RunningSandbox

SYSTEM = "urn:handoff:test:referral"
NOTE = "Peer recovery coach referral offered; patient did not decline."


def writeback_bundle(patient: str, encounter: str, key: str) -> dict:
    """A Handoff-like write-back: ServiceRequest, DocumentReference, Task, Provenance."""
    sr, doc, task, prov = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))

    def post(full_url: str, resource: dict, ident: str) -> dict:
        resource["identifier"] = [{"system": SYSTEM, "value": ident}]
        return {
            "fullUrl": full_url,
            "resource": resource,
            "request": {
                "method": "POST",
                "url": resource["resourceType"],
                "ifNoneExist": f"identifier={SYSTEM}|{ident}",
            },
        }

    subject = {"reference": f"Patient/{patient}"}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            post(
                prov,
                {
                    "resourceType": "Provenance",
                    "target": [{"reference": sr}, {"reference": doc}, {"reference": task}],
                    "recorded": "2027-01-15T09:31:00Z",
                    "agent": [{"who": {"reference": "Practitioner/demo-ed-physician"}}],
                },
                f"{key}-prov",
            ),
            post(
                sr,
                {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "priority": "urgent",
                    "code": {
                        "coding": [
                            {
                                "system": "http://snomed.info/sct",
                                "code": "461481000124109",
                                "display": "Referral to peer support",
                            }
                        ]
                    },
                    "subject": subject,
                    "encounter": {"reference": f"Encounter/{encounter}"},
                    "requester": {"reference": "Practitioner/demo-ed-physician"},
                    "authoredOn": "2027-01-15T09:30:00Z",
                },
                f"{key}-sr",
            ),
            post(
                doc,
                {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "docStatus": "final",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
                    "subject": subject,
                    "date": "2027-01-15T09:30:00Z",
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/plain; charset=utf-8",
                                "title": "Linkage note",
                                "data": base64.b64encode(NOTE.encode()).decode(),
                            }
                        }
                    ],
                    "context": {
                        "encounter": [{"reference": f"Encounter/{encounter}"}],
                        "related": [{"reference": sr}],
                    },
                },
                f"{key}-doc",
            ),
            post(
                task,
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "code": {
                        "coding": [
                            {
                                "system": "http://hl7.org/fhir/CodeSystem/task-code",
                                "code": "fulfill",
                            }
                        ]
                    },
                    "focus": {"reference": sr},
                    "for": subject,
                    "authoredOn": "2027-01-15T09:30:00Z",
                },
                f"{key}-task",
            ),
        ],
    }


def count(api: requests.Session, sandbox: RunningSandbox, rtype: str, ident: str) -> int:
    response = api.get(
        f"{sandbox.fhir}/{rtype}", params={"identifier": f"{SYSTEM}|{ident}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["total"]


def test_batch_of_gets_reads_the_chart_in_one_request(
    sandbox: RunningSandbox, p01_api: requests.Session
) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/P01-pt"}},
            {"request": {"method": "GET", "url": "Condition?patient=P01-pt&_count=100"}},
            {"request": {"method": "GET", "url": "Observation?patient=Patient/P01-pt"}},
            {"request": {"method": "GET", "url": "Encounter?patient=P01-pt&status=in-progress"}},
            {"request": {"method": "GET", "url": "MedicationRequest?patient=P01-pt"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"request": {"method": "GET", "url": "Condition?patient=P02-pt"}},
            {"request": {"method": "GET", "url": "Condition?nonsense=1"}},
        ],
    }
    response = p01_api.post(sandbox.fhir, json=batch, timeout=10)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "batch-response"
    entries = result["entry"]
    statuses = [e["response"]["status"] for e in entries]
    assert statuses[:5] == ["200 OK"] * 5
    assert statuses[5].startswith("404") and statuses[7].startswith("400")
    assert entries[5]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[0]["resource"]["id"] == "P01-pt"
    assert [e["resource"]["id"] for e in entries[1]["resource"]["entry"]] == ["P01-cond1"]
    assert entries[2]["resource"]["total"] == 1
    assert entries[3]["resource"]["entry"][0]["resource"]["id"] == "P01-enc"
    assert entries[4]["resource"]["total"] == 0
    # Patient scopes confine searches to the launch patient: P02 shows nothing.
    assert entries[6]["resource"]["total"] == 0


def test_transaction_resolves_urn_uuids_and_is_idempotent(
    sandbox: RunningSandbox, p01_api: requests.Session
) -> None:
    key = uuid.uuid4().hex[:8]
    bundle = writeback_bundle("P01-pt", "P01-enc", key)
    response = p01_api.post(sandbox.fhir, json=bundle, timeout=10)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 4
    locations = [e["response"]["location"] for e in result["entry"]]
    prov_loc, sr_loc, doc_loc, task_loc = (loc.split("/_history")[0] for loc in locations)
    assert sr_loc.startswith("ServiceRequest/") and prov_loc.startswith("Provenance/")

    doc = p01_api.get(f"{sandbox.fhir}/{doc_loc}", timeout=10).json()
    assert doc["context"]["related"][0]["reference"] == sr_loc
    task = p01_api.get(f"{sandbox.fhir}/{task_loc}", timeout=10).json()
    assert task["focus"]["reference"] == sr_loc
    prov = p01_api.get(f"{sandbox.fhir}/{prov_loc}", timeout=10).json()
    assert [t["reference"] for t in prov["target"]] == [sr_loc, doc_loc, task_loc]
    assert "urn:uuid" not in str(prov) + str(doc) + str(task)
    sr = p01_api.get(f"{sandbox.fhir}/{sr_loc}", timeout=10).json()
    assert sr["meta"]["versionId"] == "1"

    again = p01_api.post(sandbox.fhir, json=writeback_bundle("P01-pt", "P01-enc", key), timeout=10)
    assert again.status_code == 200, again.text
    second = again.json()["entry"]
    assert [e["response"]["status"] for e in second] == ["200 OK"] * 4
    assert [e["response"]["location"] for e in second] == locations
    for rtype, suffix in (
        ("ServiceRequest", "sr"),
        ("DocumentReference", "doc"),
        ("Task", "task"),
        ("Provenance", "prov"),
    ):
        assert count(p01_api, sandbox, rtype, f"{key}-{suffix}") == 1


def test_transaction_is_all_or_nothing(sandbox: RunningSandbox, p01_api: requests.Session) -> None:
    key = uuid.uuid4().hex[:8]
    bundle = writeback_bundle("P01-pt", "P01-enc", key)
    bundle["entry"][2]["resource"]["status"] = "not-a-status"
    response = p01_api.post(sandbox.fhir, json=bundle, timeout=10)
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[2]" in outcome["issue"][0]["diagnostics"]
    assert count(p01_api, sandbox, "ServiceRequest", f"{key}-sr") == 0
    assert count(p01_api, sandbox, "Provenance", f"{key}-prov") == 0


def test_transaction_with_an_unauthorized_entry_fails_whole(
    sandbox: RunningSandbox, p01_api: requests.Session, user_api: requests.Session
) -> None:
    key = uuid.uuid4().hex[:8]
    bundle = writeback_bundle("P01-pt", "P01-enc", key)
    bundle["entry"][3]["resource"]["for"] = {"reference": "Patient/P02-pt"}
    response = p01_api.post(sandbox.fhir, json=bundle, timeout=10)
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert count(user_api, sandbox, "ServiceRequest", f"{key}-sr") == 0
    assert count(user_api, sandbox, "Task", f"{key}-task") == 0


def test_conditional_create_with_if_none_exist(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    key = f"cc-{uuid.uuid4().hex[:8]}"
    resource = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": SYSTEM, "value": key}],
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": "Patient/P02-pt"},
    }
    header = {"If-None-Exist": f"identifier={SYSTEM}|{key}"}
    first = user_api.post(
        f"{sandbox.fhir}/ServiceRequest", json=resource, headers=header, timeout=10
    )
    assert first.status_code == 201, first.text
    assert first.headers["Location"].startswith(f"{sandbox.fhir}/ServiceRequest/")
    created = first.json()
    second = user_api.post(
        f"{sandbox.fhir}/ServiceRequest", json=resource, headers=header, timeout=10
    )
    assert second.status_code == 200
    assert second.json()["id"] == created["id"]
    # A duplicate made without the header makes the condition ambiguous: 412.
    assert (
        user_api.post(f"{sandbox.fhir}/ServiceRequest", json=resource, timeout=10).status_code
        == 201
    )
    third = user_api.post(
        f"{sandbox.fhir}/ServiceRequest", json=resource, headers=header, timeout=10
    )
    assert third.status_code == 412
    assert third.json()["resourceType"] == "OperationOutcome"
