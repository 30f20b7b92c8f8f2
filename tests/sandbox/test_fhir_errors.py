"""Every error is an OperationOutcome: 400, 404, 405, 410, 412, 422; update and delete."""

from __future__ import annotations

import pytest
import requests

from tests.sandbox.conftest import RunningSandbox


def outcome(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    return body["issue"][0]


@pytest.mark.parametrize(
    "body",
    [b'{"resourceType": "ServiceRequest", ', b"not json", b"", b"[1, 2]"],
)
def test_malformed_body_is_400(
    sandbox: RunningSandbox, user_api: requests.Session, body: bytes
) -> None:
    issue = outcome(user_api.post(f"{sandbox.fhir}/ServiceRequest", data=body, timeout=10), 400)
    assert issue["code"] in ("structure", "invalid")


def test_malformed_bundle_is_400(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    outcome(user_api.post(sandbox.fhir, data=b"{oops", timeout=10), 400)
    issue = outcome(
        user_api.post(
            sandbox.fhir, json={"resourceType": "Bundle", "type": "collection"}, timeout=10
        ),
        400,
    )
    assert "transaction or batch" in issue["diagnostics"]


def test_wrong_resource_type_is_400(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    issue = outcome(
        user_api.post(f"{sandbox.fhir}/ServiceRequest", json={"resourceType": "Task"}, timeout=10),
        400,
    )
    assert "does not match" in issue["diagnostics"]


def test_rule_violations_are_422(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    missing = {
        "resourceType": "ServiceRequest",
        "intent": "order",
        "subject": {"reference": "Patient/P01-pt"},
    }
    issue = outcome(user_api.post(f"{sandbox.fhir}/ServiceRequest", json=missing, timeout=10), 422)
    assert issue["expression"] == ["ServiceRequest.status"]
    dangling = dict(missing, status="active", subject={"reference": "Patient/nobody"})
    issue = outcome(user_api.post(f"{sandbox.fhir}/ServiceRequest", json=dangling, timeout=10), 422)
    assert "Patient/nobody" in issue["diagnostics"]
    bad_note = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/P01-pt"},
        "content": [{"attachment": {"contentType": "text/plain", "data": "%%% not base64"}}],
    }
    outcome(user_api.post(f"{sandbox.fhir}/DocumentReference", json=bad_note, timeout=10), 422)


def test_unsupported_methods_are_405(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    outcome(user_api.patch(f"{sandbox.fhir}/Patient/P01-pt", json=[], timeout=10), 405)
    outcome(user_api.delete(f"{sandbox.fhir}/Patient", timeout=10), 405)


def test_update_versions_vread_if_match_and_delete(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    sr = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": "Patient/P04-pt"},
    }
    created = user_api.post(f"{sandbox.fhir}/ServiceRequest", json=sr, timeout=10)
    assert created.status_code == 201
    assert created.headers["ETag"] == 'W/"1"'
    rid = created.json()["id"]
    url = f"{sandbox.fhir}/ServiceRequest/{rid}"

    wrong_id = dict(sr, id="someone-else")
    outcome(user_api.put(url, json=wrong_id, timeout=10), 400)
    updated = user_api.put(
        url, json=dict(sr, id=rid, status="active"), headers={"If-Match": 'W/"1"'}, timeout=10
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    stale = user_api.put(
        url, json=dict(sr, id=rid, status="revoked"), headers={"If-Match": 'W/"1"'}, timeout=10
    )
    outcome(stale, 412)
    assert user_api.get(f"{url}/_history/1", timeout=10).json()["status"] == "draft"
    assert user_api.get(url, timeout=10).json()["status"] == "active"
    by_status = user_api.get(
        f"{sandbox.fhir}/ServiceRequest", params={"_id": rid, "status": "draft"}, timeout=10
    ).json()
    assert by_status["total"] == 0  # the index follows the current version only

    assert user_api.delete(url, timeout=10).status_code == 204
    outcome(user_api.get(url, timeout=10), 410)
    gone = user_api.get(f"{sandbox.fhir}/ServiceRequest", params={"_id": rid}, timeout=10)
    assert gone.json()["total"] == 0


def test_put_creates_with_client_id(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    practitioner = {
        "resourceType": "Practitioner",
        "id": "coach-1",
        "name": [{"family": "Coach", "given": ["Casey"]}],
    }
    response = user_api.put(f"{sandbox.fhir}/Practitioner/coach-1", json=practitioner, timeout=10)
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/Practitioner/coach-1/_history/1")
