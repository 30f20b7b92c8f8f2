"""The sandbox's instance history (`GET Type/id/_history`), which the outbox reads after an
If-Match conflict to find whether its earlier PUT landed: every version, newest first, each
with its version in the ETag; a deletion is an entry without a resource; the compartment's
scopes apply as to a read."""

from __future__ import annotations

import requests

from tests.sandbox.conftest import RunningSandbox


def test_history_lists_every_version_newest_first(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/P04-pt"},
    }
    created = user_api.post(f"{sandbox.fhir}/Task", json=task, timeout=10)
    assert created.status_code == 201, created.text
    url = f"{sandbox.fhir}/Task/{created.json()['id']}"
    for version, status in (("1", "accepted"), ("2", "in-progress")):
        body = task | {"id": created.json()["id"], "status": status}
        answer = user_api.put(url, json=body, headers={"If-Match": f'W/"{version}"'}, timeout=10)
        assert answer.status_code == 200, answer.text
    bundle = user_api.get(f"{url}/_history", timeout=10).json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "history", 3)
    statuses = [
        (e["resource"]["meta"]["versionId"], e["resource"]["status"]) for e in bundle["entry"]
    ]
    assert statuses == [("3", "in-progress"), ("2", "accepted"), ("1", "requested")]
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "PUT", "POST"]
    two = user_api.get(f"{url}/_history", params={"_count": 2}, timeout=10).json()
    assert [e["resource"]["meta"]["versionId"] for e in two["entry"]] == ["3", "2"]
    assert user_api.delete(url, timeout=10).status_code == 204
    gone = user_api.get(f"{url}/_history", timeout=10)
    assert gone.status_code == 410  # as a read of the deleted resource


def test_history_of_a_patient_and_of_nothing(sandbox: RunningSandbox, user_api) -> None:
    patient = user_api.get(f"{sandbox.fhir}/Patient/P04-pt/_history", timeout=10).json()
    assert patient["type"] == "history" and patient["entry"][0]["resource"]["id"] == "P04-pt"
    missing = user_api.get(f"{sandbox.fhir}/Task/no-such-task/_history", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_history_needs_the_scopes_a_read_needs(sandbox: RunningSandbox) -> None:
    other = sandbox.api(sandbox.token("P01-pt", "launch openid fhirUser patient/*.rs"))
    answer = other.get(f"{sandbox.fhir}/Patient/P04-pt/_history", timeout=10)
    assert answer.status_code in (403, 404), answer.text
