"""FHIR REST reads and searches over HTTP: every supported search parameter and paging."""

from __future__ import annotations

import pytest
import requests

from tests.sandbox.conftest import RunningSandbox

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


def ids(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def search(api: requests.Session, sandbox: RunningSandbox, path: str, **params: str) -> dict:
    response = api.get(f"{sandbox.fhir}/{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def test_read_returns_resource_with_meta_and_etag(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    response = user_api.get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    patient = response.json()
    assert patient["id"] == "P01-pt"
    assert patient["meta"]["versionId"] == "1"
    assert patient["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in response.headers


@pytest.mark.parametrize("path", ["Patient/nope", "Nonsense/P01-pt", "Nonsense"])
def test_unknown_resource_or_type_is_404_outcome(
    sandbox: RunningSandbox, user_api: requests.Session, path: str
) -> None:
    response = user_api.get(f"{sandbox.fhir}/{path}", timeout=10)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("patient", "P01-pt"),
        ("patient", "Patient/P01-pt"),
        ("subject", "Patient/P01-pt"),
        ("subject", "P01-pt"),
        ("subject:Patient", "P01-pt"),
    ],
)
def test_patient_and_subject_with_or_without_prefix(
    sandbox: RunningSandbox, user_api: requests.Session, param: str, value: str
) -> None:
    bundle = search(user_api, sandbox, "Condition", **{param: value})
    assert ids(bundle) == {"P01-cond1"}
    assert bundle["total"] == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"_id": "P01-cond1,P02-cond1"}, 2),
        ({"clinical-status": "active"}, 17),
        ({"clinical-status": f"{CLINICAL}|active"}, 17),
        ({"clinical-status": "resolved"}, 0),
        ({"verification-status": "entered-in-error"}, 1),
        ({"category": "encounter-diagnosis"}, 4),
        ({"category": f"{CATEGORY}|problem-list-item"}, 13),
        ({"category:not": "problem-list-item"}, 4),
        ({"code": f"{ICD10}|F11.20"}, 10),
        ({"code": "F11.20"}, 10),
        ({"code": "|F11.20"}, 0),
        ({"code": "5602001,55680006"}, 3),
        ({"code": f"{SNOMED}|"}, 5),
        ({"code": f"{SNOMED}|5602001,{ICD10}|F10.20"}, 2),
        ({"encounter:missing": "true"}, 13),
        ({"encounter": "P05-enc"}, 1),
        ({"date": "lt2026-01-01"}, 13),
        ({"onset-date": "ge2027-01-15"}, 4),
        ({"_lastUpdated": "gt2000-01-01"}, 17),
        ({"_lastUpdated": "lt2000-01-01"}, 0),
    ],
)
def test_condition_token_reference_and_date_params(
    sandbox: RunningSandbox, user_api: requests.Session, params: dict, expected: int
) -> None:
    assert search(user_api, sandbox, "Condition", **params)["total"] == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "final"}, 6),
        ({"category": "survey"}, 5),
        ({"category": "laboratory", "code": "http://loinc.org|59673-4"}, 1),
        ({"encounter": "Encounter/P10-enc"}, 1),
        ({"date": "ge2027-01-15T07:00:00Z"}, 5),
        ({"date": "lt2027-01-15T07:00:00Z"}, 1),
        ({"date": "le2027-01-15T07:30:00Z"}, 3),
        ({"date": "gt2027-01-15T07:30:00Z"}, 3),
        ({"date": "eq2027-01-15"}, 6),
        ({"date": "2027-01-15T08:30:00Z"}, 3),
        ({"date": "2027-01-14"}, 0),
    ],
)
def test_observation_params(
    sandbox: RunningSandbox, user_api: requests.Session, params: dict, expected: int
) -> None:
    assert search(user_api, sandbox, "Observation", **params)["total"] == expected


def test_date_range_with_two_prefixes(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    response = user_api.get(
        f"{sandbox.fhir}/Observation",
        params=[("date", "ge2027-01-15T07:00:00Z"), ("date", "le2027-01-15T08:00:00Z")],
        timeout=10,
    )
    assert ids(response.json()) == {"P01-cows2", "P14-cows3"}


def test_other_types_dates_and_statuses(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    assert (
        search(user_api, sandbox, "Encounter", status="in-progress", date="ge2027-01-15")["total"]
        == 16
    )
    assert ids(search(user_api, sandbox, "MedicationRequest", date="ge2026-12-01")) == {"P03-mr2"}
    assert ids(
        search(user_api, sandbox, "MedicationRequest", status="active", patient="P11-pt")
    ) == {"P11-mr2"}
    assert search(user_api, sandbox, "MedicationAdministration", code="1191222")["total"] == 2
    assert ids(search(user_api, sandbox, "AllergyIntolerance", patient="P07-pt")) == {"P07-al2"}
    assert ids(search(user_api, sandbox, "ServiceRequest", encounter="P10-enc")) == {"P10-sr2"}
    assert search(user_api, sandbox, "Patient", name="test")["total"] >= 16
    assert ids(search(user_api, sandbox, "Patient", family="p01")) == {"P01-pt"}


def test_identifier_search_forms(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:test:mrn", "value": "ID-12345"},
            {"system": "urn:test:other", "value": "ID-12345"},
        ],
        "name": [{"family": "Identifier", "given": ["Ida"]}],
    }
    created = user_api.post(f"{sandbox.fhir}/Patient", json=patient, timeout=10)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    for value in ("urn:test:mrn|ID-12345", "ID-12345", "urn:test:other|"):
        assert ids(search(user_api, sandbox, "Patient", identifier=value)) == {new_id}, value
    assert search(user_api, sandbox, "Patient", identifier="urn:test:mrn|nope")["total"] == 0


def test_paging_follows_next_links(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    first = search(user_api, sandbox, "Condition", _count="5")
    assert first["total"] == 17
    seen: list[str] = []
    bundle = first
    pages = 0
    while True:
        pages += 1
        assert len(bundle.get("entry", [])) <= 5
        for entry in bundle.get("entry", []):
            assert entry["fullUrl"] == f"{sandbox.fhir}/Condition/{entry['resource']['id']}"
            seen.append(entry["resource"]["id"])
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(f"{sandbox.fhir}/Condition?")
        if "next" not in links:
            break
        response = user_api.get(links["next"], timeout=10)
        assert response.status_code == 200
        bundle = response.json()
    assert pages == 4
    assert len(seen) == len(set(seen)) == 17


def test_post_search_matches_get(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    response = user_api.post(
        f"{sandbox.fhir}/Condition/_search",
        data={"code": "F11.20", "patient": "P03-pt"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.status_code == 200
    assert ids(response.json()) == {"P03-cond1"}


def test_compartment_sort_and_include(sandbox: RunningSandbox, user_api: requests.Session) -> None:
    assert ids(search(user_api, sandbox, "Patient/P14-pt/Condition")) == {"P14-cond1", "P14-cond2"}
    ordered = search(user_api, sandbox, "Observation", _sort="-date")
    dates = [e["resource"]["effectiveDateTime"] for e in ordered["entry"]]
    assert dates == sorted(dates, reverse=True)
    included = search(user_api, sandbox, "Encounter", _id="P01-enc", _include="Encounter:patient")
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in included["entry"]}
    assert modes == {("Encounter", "match"), ("Patient", "include")}
    assert included["total"] == 1
    rev = search(user_api, sandbox, "Patient", _id="P01-pt", _revinclude="Condition:patient")
    assert {e["resource"]["id"] for e in rev["entry"]} == {"P01-pt", "P01-cond1"}


def test_unknown_search_parameter_is_400_unless_lenient(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    strict = user_api.get(f"{sandbox.fhir}/Condition", params={"colour": "red"}, timeout=10)
    assert strict.status_code == 400
    assert "colour" in strict.json()["issue"][0]["diagnostics"]
    lenient = user_api.get(
        f"{sandbox.fhir}/Condition",
        params={"colour": "red"},
        headers={"Prefer": "handling=lenient"},
        timeout=10,
    )
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 17
    bad_date = user_api.get(f"{sandbox.fhir}/Condition", params={"date": "yesterday"}, timeout=10)
    assert bad_date.status_code == 400


def test_capability_statement_describes_what_is_supported(sandbox: RunningSandbox) -> None:
    statement = requests.get(f"{sandbox.fhir}/metadata", timeout=10).json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    by_type = {r["type"]: r for r in rest["resource"]}
    for rtype in (
        "Patient",
        "Practitioner",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        "MedicationDispense",
        "AllergyIntolerance",
        "ServiceRequest",
        "DocumentReference",
        "Task",
        "Provenance",
        "Procedure",
        "Immunization",
        "Medication",
        "Organization",
        "Location",
        "CarePlan",
    ):
        assert rtype in by_type, rtype
    observation = by_type["Observation"]
    assert {"read", "search-type", "create", "update"} <= {
        i["code"] for i in observation["interaction"]
    }
    params = {p["name"]: p["type"] for p in observation["searchParam"]}
    assert params["date"] == "date" and params["code"] == "token"
    assert params["patient"] == "reference" and params["_id"] == "token"
    assert observation["conditionalCreate"] is True
    # PUT honours If-Match (the lifecycle's version-aware updates): said so to clients
    assert {r["versioning"] for r in rest["resource"]} == {"versioned-update"}
    oauth = rest["security"]["extension"][0]
    assert oauth["url"].endswith("oauth-uris")
    uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
    assert uris == {
        "authorize": f"{sandbox.base}/auth/authorize",
        "token": f"{sandbox.base}/auth/token",
    }
