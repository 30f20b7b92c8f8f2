"""The peer FHIR server (Medplum's engine): it starts, keeps the scenarios' ids, de-duplicates
conditional creates, searches by identifier, and what it says about Handoff's write-back."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime

import pytest
import requests

from tests.faultproxy import FaultProxy
from tests.peers import (
    PeerFhirServer,
    ensure_node_modules,
    scenario_bundles,
    start_fhir_server,
    write_seed_files,
)

SYSTEM = "urn:handoff:test:peers"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def get(server: PeerFhirServer, path: str, **params: str) -> requests.Response:
    return requests.get(server.url(path), params=params, headers=FHIR_JSON, timeout=10)


def post(server: PeerFhirServer, path: str, body: dict, **headers: str) -> requests.Response:
    return requests.post(server.url(path), json=body, headers=FHIR_JSON | headers, timeout=30)


def service_request(value: str, patient: str = "P01-pt") -> dict:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": SYSTEM, "value": value}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
    }


def total(server: PeerFhirServer, rtype: str, **params: str) -> int:
    response = get(server, rtype, **params)
    assert response.status_code == 200, response.text
    return response.json()["total"]


# -- starting it ------------------------------------------------------------------------------


def test_p01_alone_keeps_its_ids(tmp_path) -> None:
    """Start a server with scenario P01 only: the collection Bundle becomes a transaction of
    PUTs, and Medplum keeps the client ids."""
    bundles = scenario_bundles(names=["P01"], directory=False)
    assert len(bundles) == 1 and bundles[0]["type"] == "transaction"
    urls = [e["request"]["url"] for e in bundles[0]["entry"]]
    assert {"Patient/P01-pt", "Encounter/P01-enc", "Condition/P01-cond1"} <= set(urls)
    assert all(e["request"]["method"] == "PUT" for e in bundles[0]["entry"])
    seeds = write_seed_files(bundles, tmp_path / "seed")
    server = start_fhir_server(seeds, workdir=tmp_path / "server")
    try:
        assert server.start_seconds < 60
        assert server.seeded["Patient/P01-pt"] == "Patient/P01-pt"
        for path in ("Patient/P01-pt", "Encounter/P01-enc", "Condition/P01-cond1"):
            response = get(server, path)
            assert response.status_code == 200, (path, response.text)
            assert response.json()["id"] == path.split("/")[1]
        assert total(server, "Patient") == 1  # P01 only, no directory data
        conditions = get(server, "Condition", patient="P01-pt").json()
        assert [e["resource"]["id"] for e in conditions["entry"]] == ["P01-cond1"]
        # the same server also answers without the /fhir prefix
        assert requests.get(f"{server.origin}/Patient/P01-pt", timeout=10).status_code == 200
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url("metadata"), timeout=5)


def test_node_modules_are_cached() -> None:
    ensure_node_modules()  # installs if this is the first use on this machine
    modules, seconds = ensure_node_modules()
    assert seconds == 0.0  # then reused
    assert (modules / "@medplum" / "fhir-router").is_dir()


def test_session_fixture_serves_every_scenario(medplum: PeerFhirServer) -> None:
    assert medplum.base_url.endswith("/fhir")
    for path in ("Patient/P01-pt", "Encounter/P01-enc", "Condition/P01-cond1", "Patient/P16-pt"):
        assert get(medplum, path).status_code == 200, path
    assert get(medplum, "Organization/peer-recovery-coach-team").status_code == 200
    assert get(medplum, "Practitioner/demo-ed-physician").status_code == 200
    assert len(medplum.seeded) > 60
    # dates are shifted to the fixture's "now", as the sandbox shifts them
    encounter = get(medplum, "Encounter/P01-enc").json()
    start = datetime.fromisoformat(encounter["period"]["start"].replace("Z", "+00:00"))
    assert medplum.now is not None and start <= medplum.now
    assert (medplum.now - start).total_seconds() < 24 * 3600
    statement = get(medplum, "metadata").json()
    assert {"code": "transaction"} in statement["rest"][0]["interaction"]


# -- ids, conditional create, identifier search ---------------------------------------------


def test_put_keeps_the_client_id_and_post_assigns_one(medplum: PeerFhirServer) -> None:
    rid = f"handoff-{uuid.uuid4().hex[:12]}"
    body = service_request(str(uuid.uuid4())) | {"id": rid}
    put = requests.put(
        medplum.url(f"ServiceRequest/{rid}"), json=body, headers=FHIR_JSON, timeout=10
    )
    assert put.status_code == 200, put.text  # Medplum: 200 even when the PUT creates
    assert get(medplum, f"ServiceRequest/{rid}").json()["id"] == rid
    posted = post(medplum, "ServiceRequest", service_request(str(uuid.uuid4())) | {"id": "mine"})
    assert posted.status_code == 201
    assert posted.json()["id"] != "mine"  # the server assigns ids on create
    assert posted.headers["Location"].startswith(medplum.url("ServiceRequest/"))
    # versionId is a UUID, not a counter
    assert len(posted.json()["meta"]["versionId"]) == 36


def test_conditional_create_in_a_transaction_creates_nothing_the_second_time(
    medplum: PeerFhirServer,
) -> None:
    value, task_value = str(uuid.uuid4()), str(uuid.uuid4())
    sr_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": sr_url,
                "resource": service_request(value),
                "request": {
                    "method": "POST",
                    "url": "ServiceRequest",
                    "ifNoneExist": f"identifier={SYSTEM}|{value}",
                },
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Task",
                    "identifier": [{"system": SYSTEM, "value": task_value}],
                    "status": "requested",
                    "intent": "order",
                    "focus": {"reference": sr_url},
                    "for": {"reference": "Patient/P01-pt"},
                },
                "request": {
                    "method": "POST",
                    "url": "Task",
                    "ifNoneExist": f"identifier={SYSTEM}|{task_value}",
                },
            },
        ],
    }
    first = post(medplum, "", bundle)
    assert first.status_code == 200, first.text
    statuses = [e["response"]["status"] for e in first.json()["entry"]]
    assert statuses == ["201", "201"]  # bare codes, no reason phrase
    second = post(medplum, "", bundle)
    assert second.status_code == 200, second.text
    assert [e["response"]["status"] for e in second.json()["entry"]] == ["200", "200"]
    locations = [e["response"]["location"] for e in first.json()["entry"]]
    assert [e["response"]["location"] for e in second.json()["entry"]] == locations
    assert locations[0].startswith(medplum.url("ServiceRequest/"))  # absolute, no _history
    assert total(medplum, "ServiceRequest", identifier=f"{SYSTEM}|{value}") == 1
    assert total(medplum, "Task", identifier=f"{SYSTEM}|{task_value}") == 1
    sr_id = locations[0].rsplit("/", 1)[1]
    task = get(medplum, "Task", identifier=f"{SYSTEM}|{task_value}").json()["entry"][0]
    assert task["resource"]["focus"]["reference"] == f"ServiceRequest/{sr_id}"


def test_conditional_create_by_header(medplum: PeerFhirServer) -> None:
    value = str(uuid.uuid4())
    condition = f"identifier={SYSTEM}|{value}"
    first = post(medplum, "ServiceRequest", service_request(value), **{"If-None-Exist": condition})
    second = post(medplum, "ServiceRequest", service_request(value), **{"If-None-Exist": condition})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    # two matches: 412, as FHIR says
    third = post(medplum, "ServiceRequest", service_request(value))
    assert third.status_code == 201
    fourth = post(medplum, "ServiceRequest", service_request(value), **{"If-None-Exist": condition})
    assert fourth.status_code == 412, fourth.text


def test_search_by_identifier(medplum: PeerFhirServer) -> None:
    value = str(uuid.uuid4())
    assert post(medplum, "ServiceRequest", service_request(value)).status_code == 201
    assert total(medplum, "ServiceRequest", identifier=f"{SYSTEM}|{value}") == 1
    assert total(medplum, "ServiceRequest", identifier=value) == 1  # value alone
    assert total(medplum, "ServiceRequest", identifier=f"urn:other|{value}") == 0
    assert total(medplum, "ServiceRequest", identifier=f"{SYSTEM}|nope") == 0
    note = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": SYSTEM, "value": value}],
        "status": "current",
        "subject": {"reference": "Patient/P01-pt"},
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
    }
    assert post(medplum, "DocumentReference", note).status_code == 201
    assert total(medplum, "DocumentReference", identifier=f"{SYSTEM}|{value}") == 1


def test_transaction_is_all_or_nothing_and_validation_is_400(medplum: PeerFhirServer) -> None:
    value = str(uuid.uuid4())
    no_subject = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    refused = post(medplum, "ServiceRequest", no_subject)
    assert refused.status_code == 400  # Medplum answers validation errors with 400, not 422
    issue = refused.json()["issue"][0]
    assert issue["expression"] == ["ServiceRequest.subject"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": service_request(value),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {"resource": no_subject, "request": {"method": "POST", "url": "ServiceRequest"}},
        ],
    }
    assert post(medplum, "", bundle).status_code == 400
    assert total(medplum, "ServiceRequest", identifier=f"{SYSTEM}|{value}") == 0
    # codes are not checked against their value sets, references are not resolved
    loose = service_request(str(uuid.uuid4()), patient="no-such-patient") | {"status": "bogus"}
    assert post(medplum, "ServiceRequest", loose).status_code == 201


def test_the_fault_proxy_works_in_front_of_it(medplum: PeerFhirServer) -> None:
    with FaultProxy(medplum.origin) as proxy:
        value = str(uuid.uuid4())
        proxy.add_fault("drop_after_forward", method="POST", path="/fhir")
        with pytest.raises(requests.ConnectionError):
            requests.post(
                f"{proxy.url}/fhir/ServiceRequest",
                json=service_request(value),
                headers=FHIR_JSON,
                timeout=10,
            )
        assert total(medplum, "ServiceRequest", identifier=f"{SYSTEM}|{value}") == 1


# -- Handoff's own write-back bundle ---------------------------------------------------------


def handoff_bundle(patient: str, encounter: str) -> dict:
    """What smartapp.writeback.resources builds for a sample referral: consult accepted, bup and
    naloxone accepted with draft MedicationRequests."""
    from smartapp.writeback.resources import (
        ItemDecision,
        ShownSuggestion,
        SignedReferral,
        WriteSettings,
        build_transaction,
    )

    def shown(kind: str, title: str) -> ShownSuggestion:
        return ShownSuggestion(
            kind=kind,
            title=title,
            reason="Opioid use disorder, COWS 13",
            variant=None,
            cautions=(),
            evidence=(f"Condition/{patient.split('-')[0]}-cond1",),
            evidence_words=("Diagnosis: Opioid dependence",),
            rule=kind,
        )

    kinds = {
        "prc-consult": "Peer recovery coach consult",
        "moud-buprenorphine": "Buprenorphine",
        "naloxone-kit": "Naloxone kit",
    }
    referral = SignedReferral(
        iss=f"urn:test:{uuid.uuid4()}",
        patient_id=patient,
        encounter_id=encounter,
        encounter_start="2026-11-20T13:00:00Z",
        user_ref="Practitioner/demo-ed-physician",
        user_name="Dr Avery Demo",
        signed_at=datetime(2026, 11, 20, 15, 0, tzinfo=UTC),
        pack_id="handoff-default",
        pack_version="1.0.0",
        pack_hash="ab" * 32,
        shown=tuple(shown(k, t) for k, t in kinds.items()),
        decisions=tuple(ItemDecision(k, True) for k in kinds),
        consult_mode="in-person",
        program="Bridge clinic",
        opioid=True,
    )
    settings = WriteSettings(
        identifier_system="urn:handoff:referral",
        service_request_code={
            "system": "http://snomed.info/sct",
            "code": "461481000124109",
            "display": "Referral to peer support",
        },
        note_type={"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"},
        doc_status="final",
        coach_team={"reference": "Organization/peer-recovery-coach-team"},
        part2_program=True,
        draft_medications=True,
        medication_codes={
            "moud-buprenorphine": {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1010600",
                "display": "buprenorphine 8 MG / naloxone 2 MG Sublingual Film",
            },
            "naloxone-kit": {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1725065",
                "display": "naloxone 4 MG/ACTUAT Nasal Spray",
            },
        },
    )
    return build_transaction(referral, settings)


def tag_problems(outcome: dict) -> list[str]:
    return [
        " ".join(issue.get("expression") or [])
        for issue in outcome.get("issue") or []
        if any(".meta.tag" in e for e in issue.get("expression") or [])
    ]


def test_handoffs_bundle_as_built(medplum: PeerFhirServer) -> None:
    """Handoff's transaction as smartapp.writeback.resources builds it today."""
    bundle = handoff_bundle("P01-pt", "P01-enc")
    first = post(medplum, "", bundle)
    assert first.status_code == 200, (first.text, tag_problems(first.json()))
    second = post(medplum, "", bundle)
    assert second.status_code == 200, second.text
    assert all(e["response"]["status"] == "200" for e in second.json()["entry"])


def test_handoffs_bundle_with_a_coding_tag(medplum: PeerFhirServer) -> None:
    """Everything else in Handoff's bundle passes Medplum's validation, and conditional
    creates de-duplicate a retry (Provenance tag made a Coding, its _tag query unchanged)."""
    bundle = copy.deepcopy(handoff_bundle("P05-pt", "P05-enc"))
    types = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        types.append(resource["resourceType"])
        tags = (resource.get("meta") or {}).get("tag") or []
        resource.setdefault("meta", {})["tag"] = [
            {"system": t["system"], "code": t.get("code") or t["value"]} for t in tags
        ]
    assert {"ServiceRequest", "Task", "DocumentReference", "Provenance"} <= set(types)
    first = post(medplum, "", bundle)
    assert first.status_code == 200, first.text
    created = {e["resource"]["resourceType"]: e["resource"]["id"] for e in first.json()["entry"]}
    assert all(e["response"]["status"] == "201" for e in first.json()["entry"])
    second = post(medplum, "", bundle)
    assert second.status_code == 200, second.text
    assert all(e["response"]["status"] == "200" for e in second.json()["entry"])
    for entry in bundle["entry"]:
        rtype = entry["resource"]["resourceType"]
        query = entry["request"]["ifNoneExist"]
        name, _, value = query.partition("=")
        assert total(medplum, rtype, **{name: value}) == 1, query
    # bundle-local urn:uuid references were rewritten to the new ids
    provenance = get(medplum, f"Provenance/{created['Provenance']}").json()
    targets = {t["reference"] for t in provenance["target"]}
    assert f"ServiceRequest/{created['ServiceRequest']}" in targets
    task = get(medplum, f"Task/{created['Task']}").json()
    assert task["focus"]["reference"] == f"ServiceRequest/{created['ServiceRequest']}"
    # security labels are kept as sent
    note = get(medplum, f"DocumentReference/{created['DocumentReference']}").json()
    codes = {label["code"] for label in note["meta"]["security"]}
    assert {"R", "OPIOIDUD", "42CFRPart2", "NORDSCLCD"} <= codes
