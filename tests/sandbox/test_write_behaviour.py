"""Write behaviours over HTTP: the sandbox refuses and constrains writes like Epic or Oracle
Health (`write_behaviour` switch and keyword), and the individual write switches."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.sandbox.conftest import RunningSandbox, start_sandbox

SYSTEM = "urn:handoff:test:write-behaviour"
PATIENT = {"reference": "Patient/P01-pt"}
ENCOUNTER = {"reference": "Encounter/P01-enc"}
COACH_TEAM = {"reference": "Organization/peer-recovery-coach-team"}
PHYSICIAN = {"reference": "Practitioner/demo-ed-physician"}
SCOPE = "launch openid fhirUser user/*.cruds"


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    running = start_sandbox(tmp_path_factory.mktemp("write-behaviour"), test_controls=True)
    yield running
    running.handle.stop()


@pytest.fixture(scope="module")
def api(ehr: RunningSandbox) -> requests.Session:
    return ehr.api(ehr.token("P01-pt", SCOPE))


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "ehr" in request.fixturenames:
        ehr: RunningSandbox = request.getfixturevalue("ehr")
        assert requests.post(f"{ehr.base}/_sandbox/faults", json={}, timeout=10).ok


def set_faults(ehr: RunningSandbox, **faults: object) -> dict:
    response = requests.post(f"{ehr.base}/_sandbox/faults", json=faults, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def ident() -> dict:
    return {"system": SYSTEM, "value": str(uuid.uuid4())}


def service_request(identifier: dict) -> dict:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [identifier],
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "461481000124109"}]},
        "subject": PATIENT,
        "encounter": ENCOUNTER,
        "performer": [COACH_TEAM],
    }


def task(identifier: dict) -> dict:
    return {
        "resourceType": "Task",
        "identifier": [identifier],
        "status": "requested",
        "intent": "order",
        "for": PATIENT,
        "owner": COACH_TEAM,
    }


def note(
    identifier: dict,
    *,
    content_type: str = "text/plain; charset=utf-8",
    doc_status: str | None = "final",
    encounter: dict | None = ENCOUNTER,
    period_end: bool = True,
) -> dict:
    context: dict = {"period": {"start": "2027-01-15T08:00:00Z"}}
    if period_end:
        context["period"]["end"] = "2027-01-15T09:30:00Z"
    if encounter is not None:
        context["encounter"] = [encounter]
    resource = {
        "resourceType": "DocumentReference",
        "identifier": [identifier],
        "status": "current",
        "subject": PATIENT,
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    "data": base64.b64encode(b"Linkage note").decode(),
                }
            }
        ],
        "context": context,
    }
    if doc_status is not None:
        resource["docStatus"] = doc_status
    return resource


def provenance(target: str) -> dict:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": "2027-01-15T09:31:00Z",
        "agent": [{"who": PHYSICIAN}],
    }


def communication(identifier: dict, recipient: dict | None = COACH_TEAM) -> dict:
    resource = {
        "resourceType": "Communication",
        "identifier": [identifier],
        "status": "completed",
        "subject": PATIENT,
        "encounter": ENCOUNTER,
        "sender": PHYSICIAN,
        "payload": [{"contentString": "Warm handoff: please see the patient in the ED."}],
    }
    if recipient is not None:
        resource["recipient"] = [recipient]
    return resource


def medication_request(identifier: dict, status: str = "draft") -> dict:
    return {
        "resourceType": "MedicationRequest",
        "identifier": [identifier],
        "status": status,
        "intent": "proposal",
        "medicationCodeableConcept": {"text": "naloxone 4 mg nasal spray"},
        "subject": PATIENT,
        "encounter": ENCOUNTER,
    }


def transaction(*resources: tuple[dict, dict]) -> dict:
    """A transaction of conditional creates (resource, identifier)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": f"identifier={i['system']}|{i['value']}",
                },
            }
            for resource, i in resources
        ],
    }


def create(api: requests.Session, ehr: RunningSandbox, resource: dict, **headers: str):
    return api.post(f"{ehr.fhir}/{resource['resourceType']}", json=resource, headers=headers)


def by_identifier(api: requests.Session, ehr: RunningSandbox, rtype: str, i: dict) -> int:
    found = api.get(f"{ehr.fhir}/{rtype}", params={"identifier": f"{i['system']}|{i['value']}"})
    assert found.status_code == 200, found.text
    return found.json()["total"]


def outcome_text(response: requests.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return " ".join(
        f"{issue.get('diagnostics', '')} {' '.join(issue.get('expression', []))}"
        for issue in body["issue"]
    )


def assert_refused(response: requests.Response, rtype: str) -> None:
    assert response.status_code == 405, response.text
    assert f"{rtype} create is not supported" in outcome_text(response)


# -- the switches themselves -------------------------------------------------------------


def test_write_switches_are_validated(ehr: RunningSandbox) -> None:
    for bad in (
        {"write_behaviour": "cerner"},
        {"write_behaviour": True},
        {"refuse_create": ["NotAType"]},
        {"refuse_create": "ServiceRequest"},
        {"refuse_create": ["Bundle"]},
        {"refuse_transactions": "yes"},
    ):
        response = requests.post(f"{ehr.base}/_sandbox/faults", json=bad, timeout=10)
        assert response.status_code == 400, (bad, response.text)
    assert set_faults(ehr, write_behaviour="epic", refuse_create=["Observation"]) == {
        "write_behaviour": "epic",
        "refuse_create": ["Observation"],
    }
    rules = requests.get(f"{ehr.base}/_sandbox/write-rules", timeout=10).json()
    assert rules["behaviour"] == "epic"
    assert "Observation" in rules["refuse_create"] and "ServiceRequest" in rules["refuse_create"]
    assert rules["conditional_create"] is False


def test_fhir_rest_default_takes_everything(ehr: RunningSandbox, api: requests.Session) -> None:
    sr, tk = ident(), ident()
    bundle = transaction((service_request(sr), sr), (task(tk), tk))
    for _ in range(2):
        response = api.post(ehr.fhir, json=bundle)
        assert response.status_code == 200, response.text
    assert by_identifier(api, ehr, "ServiceRequest", sr) == 1
    assert by_identifier(api, ehr, "Task", tk) == 1
    for resource in (
        provenance("Patient/P01-pt"),
        communication(ident()),
        medication_request(ident(), "active"),
    ):
        assert create(api, ehr, resource).status_code == 201
    doc = ident()
    draft = note(doc, content_type="text/html", doc_status="preliminary", period_end=False)
    assert create(api, ehr, draft).status_code == 201


def test_search_by_identifier_for_every_written_type(
    ehr: RunningSandbox, api: requests.Session
) -> None:
    """The app searches by identifier before a retry where there is no conditional create."""
    makers = {
        "ServiceRequest": service_request,
        "Task": task,
        "DocumentReference": note,
        "Communication": communication,
        "MedicationRequest": medication_request,
    }
    for rtype, make in makers.items():
        i = ident()
        assert by_identifier(api, ehr, rtype, i) == 0
        assert create(api, ehr, make(i)).status_code == 201
        assert by_identifier(api, ehr, rtype, i) == 1, rtype
        value_only = api.get(f"{ehr.fhir}/{rtype}", params={"identifier": i["value"]})
        assert value_only.json()["total"] == 1, rtype
    # Provenance has no identifier in R4: Handoff tags it, and _tag finds it.
    tag = ident()
    prov = provenance("Patient/P01-pt") | {
        "meta": {"tag": [{"system": tag["system"], "code": tag["value"]}]}
    }
    assert create(api, ehr, prov).status_code == 201
    found = api.get(f"{ehr.fhir}/Provenance", params={"_tag": f"{tag['system']}|{tag['value']}"})
    assert found.json()["total"] == 1


def test_communication_is_searchable_by_patient_subject_and_recipient(
    ehr: RunningSandbox, api: requests.Session
) -> None:
    i = ident()
    created = create(api, ehr, communication(i))
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    for params in (
        {"patient": "P01-pt"},
        {"subject": "Patient/P01-pt"},
        {"recipient": "Organization/peer-recovery-coach-team"},
        {"sender": "Practitioner/demo-ed-physician"},
        {"encounter": "P01-enc"},
    ):
        found = api.get(f"{ehr.fhir}/Communication", params=params | {"_count": "500"})
        assert found.status_code == 200, found.text
        assert cid in [e["resource"]["id"] for e in found.json().get("entry", [])], params
    statement = requests.get(f"{ehr.fhir}/metadata", timeout=10).json()
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Communication")
    names = {p["name"] for p in resource["searchParam"]}
    assert {"patient", "subject", "identifier", "recipient"} <= names
    bad = communication(ident()) | {"status": "sent"}
    assert create(api, ehr, bad).status_code == 422


# -- Epic ---------------------------------------------------------------------------------


def test_epic_refuses_order_task_provenance_and_communication_creates(
    ehr: RunningSandbox, api: requests.Session
) -> None:
    set_faults(ehr, write_behaviour="epic")
    i = ident()
    assert_refused(create(api, ehr, service_request(i)), "ServiceRequest")
    assert_refused(create(api, ehr, task(ident())), "Task")
    assert_refused(create(api, ehr, provenance("Patient/P01-pt")), "Provenance")
    assert_refused(create(api, ehr, communication(ident())), "Communication")
    # update-as-create is a create too
    put = api.put(
        f"{ehr.fhir}/ServiceRequest/handoff-put", json=service_request(i) | {"id": "handoff-put"}
    )
    assert_refused(put, "ServiceRequest")
    assert by_identifier(api, ehr, "ServiceRequest", i) == 0


def test_epic_refuses_transactions_but_reads_in_a_batch(
    ehr: RunningSandbox, api: requests.Session
) -> None:
    set_faults(ehr, write_behaviour="epic")
    doc = ident()
    response = api.post(ehr.fhir, json=transaction((note(doc, doc_status="preliminary"), doc)))
    assert response.status_code == 405, response.text
    assert "transaction" in outcome_text(response)
    assert by_identifier(api, ehr, "DocumentReference", doc) == 0
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/P01-pt"}},
            {"request": {"method": "GET", "url": "Condition?patient=P01-pt"}},
        ],
    }
    read = api.post(ehr.fhir, json=batch)
    assert read.status_code == 200, read.text
    assert [e["response"]["status"] for e in read.json()["entry"]] == ["200 OK", "200 OK"]


def test_epic_ignores_if_none_exist(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="epic")
    doc = ident()
    condition = f"identifier={doc['system']}|{doc['value']}"
    for _ in range(2):
        created = create(
            api, ehr, note(doc, doc_status="preliminary"), **{"If-None-Exist": condition}
        )
        assert created.status_code == 201, created.text
    assert by_identifier(api, ehr, "DocumentReference", doc) == 2  # a duplicate, as at Epic


def test_epic_note_constraints(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="epic")
    html = create(api, ehr, note(ident(), content_type="text/html"))
    assert html.status_code == 422, html.text
    assert "DocumentReference.content[0].attachment.contentType" in outcome_text(html)
    no_encounter = create(api, ehr, note(ident(), encounter=None))
    assert no_encounter.status_code == 422, no_encounter.text
    assert "DocumentReference.context.encounter" in outcome_text(no_encounter)
    unknown = create(api, ehr, note(ident(), encounter={"reference": "Encounter/nope"}))
    assert unknown.status_code == 422, unknown.text
    assert "DocumentReference.context.encounter" in outcome_text(unknown)
    # preliminary (a draft for the physician to sign) and final are both accepted
    for status in ("preliminary", "final"):
        doc = create(api, ehr, note(ident(), doc_status=status, period_end=False))
        assert doc.status_code == 201, doc.text
        assert doc.json()["docStatus"] == status


def test_epic_medication_request_only_as_draft(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="epic")
    assert create(api, ehr, medication_request(ident(), "draft")).status_code == 201
    active = create(api, ehr, medication_request(ident(), "active"))
    assert active.status_code == 422, active.text
    assert "MedicationRequest.status" in outcome_text(active)


def test_epic_capability_statement_says_so(ehr: RunningSandbox) -> None:
    set_faults(ehr, write_behaviour="epic")
    statement = requests.get(f"{ehr.fhir}/metadata", timeout=10).json()
    rest = statement["rest"][0]
    assert [i["code"] for i in rest["interaction"]] == ["batch"]
    by_type = {r["type"]: r for r in rest["resource"]}
    codes = {t: [i["code"] for i in r["interaction"]] for t, r in by_type.items()}
    assert "create" not in codes["ServiceRequest"] and "create" not in codes["Task"]
    assert "create" in codes["DocumentReference"]
    assert by_type["DocumentReference"]["conditionalCreate"] is False
    set_faults(ehr)
    statement = requests.get(f"{ehr.fhir}/metadata", timeout=10).json()
    assert {"code": "transaction"} in statement["rest"][0]["interaction"]


# -- Oracle Health ------------------------------------------------------------------------


def test_oracle_refuses_order_task_and_medication_creates_and_transactions(
    ehr: RunningSandbox, api: requests.Session
) -> None:
    set_faults(ehr, write_behaviour="oracle-health")
    assert_refused(create(api, ehr, service_request(ident())), "ServiceRequest")
    assert_refused(create(api, ehr, task(ident())), "Task")
    assert_refused(create(api, ehr, medication_request(ident())), "MedicationRequest")
    doc = ident()
    response = api.post(ehr.fhir, json=transaction((note(doc), doc)))
    assert response.status_code == 405, response.text
    # seeded ServiceRequests stay readable
    assert api.get(f"{ehr.fhir}/ServiceRequest", params={"patient": "P01-pt"}).status_code == 200


def test_oracle_note_needs_final_and_period_end(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="oracle-health")
    draft = create(api, ehr, note(ident(), doc_status="preliminary"))
    assert draft.status_code == 422, draft.text
    assert "DocumentReference.docStatus" in outcome_text(draft)
    missing = create(api, ehr, note(ident(), doc_status=None))
    assert missing.status_code == 422
    open_ended = create(api, ehr, note(ident(), period_end=False))
    assert open_ended.status_code == 422, open_ended.text
    assert "DocumentReference.context.period.end" in outcome_text(open_ended)
    # neither text/plain nor an encounter is demanded here
    doc = ident()
    good = note(doc, content_type="application/pdf", encounter=None)
    condition = f"identifier={doc['system']}|{doc['value']}"
    for _ in range(2):
        created = create(api, ehr, good, **{"If-None-Exist": condition})
        assert created.status_code == 201, created.text
    assert by_identifier(api, ehr, "DocumentReference", doc) == 2  # no conditional create


def test_oracle_takes_communication_to_a_person_or_a_pool(
    ehr: RunningSandbox, api: requests.Session
) -> None:
    set_faults(ehr, write_behaviour="oracle-health")
    pool = api.post(
        f"{ehr.fhir}/Group",
        json={"resourceType": "Group", "type": "practitioner", "actual": True, "name": "Coaches"},
    )
    assert pool.status_code == 201, pool.text
    recipients = (
        COACH_TEAM,
        PHYSICIAN,
        {"reference": f"Group/{pool.json()['id']}"},
        {"reference": "PractitionerRole/coach-on-call"},
    )
    for recipient in recipients:
        i = ident()
        created = create(api, ehr, communication(i, recipient))
        assert created.status_code == 201, (recipient, created.text)
        assert by_identifier(api, ehr, "Communication", i) == 1
    to_patient = create(api, ehr, communication(ident(), PATIENT))
    assert to_patient.status_code == 422, to_patient.text
    assert "Communication.recipient[0]" in outcome_text(to_patient)
    nobody = create(api, ehr, communication(ident(), None))
    assert nobody.status_code == 422
    assert "Communication.recipient" in outcome_text(nobody)


def test_oracle_takes_provenance(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="oracle-health")
    doc = create(api, ehr, note(ident()))
    assert doc.status_code == 201, doc.text
    prov = create(api, ehr, provenance(f"DocumentReference/{doc.json()['id']}"))
    assert prov.status_code == 201, prov.text
    found = api.get(
        f"{ehr.fhir}/Provenance", params={"target": f"DocumentReference/{doc.json()['id']}"}
    )
    assert found.json()["total"] == 1


# -- individual switches --------------------------------------------------------------------


def test_refuse_transactions_alone(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, refuse_transactions=True)
    sr = ident()
    assert api.post(ehr.fhir, json=transaction((service_request(sr), sr))).status_code == 405
    assert create(api, ehr, service_request(sr)).status_code == 201  # creates still work


def test_no_conditional_create_alone(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, no_conditional_create=True)
    sr = ident()
    bundle = transaction((service_request(sr), sr))
    for _ in range(2):
        assert api.post(ehr.fhir, json=bundle).status_code == 200
    assert by_identifier(api, ehr, "ServiceRequest", sr) == 2
    tk = ident()
    condition = f"identifier={tk['system']}|{tk['value']}"
    for _ in range(2):
        assert create(api, ehr, task(tk), **{"If-None-Exist": condition}).status_code == 201
    assert by_identifier(api, ehr, "Task", tk) == 2
    set_faults(ehr)
    again = create(api, ehr, task(tk), **{"If-None-Exist": condition})
    assert again.status_code == 412  # back to conditional create: two match now


def test_require_period_end_and_refuse_create(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, require_period_end=True, refuse_create=["Communication", "Task"])
    open_ended = create(api, ehr, note(ident(), period_end=False))
    assert open_ended.status_code == 422
    assert "DocumentReference.context.period.end" in outcome_text(open_ended)
    assert create(api, ehr, note(ident(), doc_status="preliminary")).status_code == 201
    assert_refused(create(api, ehr, communication(ident())), "Communication")
    assert_refused(create(api, ehr, task(ident())), "Task")
    assert create(api, ehr, service_request(ident())).status_code == 201


def test_switches_add_to_a_behaviour(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="epic", require_period_end=True, refuse_create=["Observation"])
    open_ended = create(api, ehr, note(ident(), period_end=False))
    assert open_ended.status_code == 422
    assert_refused(create(api, ehr, service_request(ident())), "ServiceRequest")
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "COWS"},
        "subject": PATIENT,
    }
    assert_refused(create(api, ehr, observation), "Observation")


def test_batch_entries_follow_the_rules(ehr: RunningSandbox, api: requests.Session) -> None:
    set_faults(ehr, write_behaviour="oracle-health")
    doc = ident()
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": service_request(ident()),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {"resource": note(doc), "request": {"method": "POST", "url": "DocumentReference"}},
        ],
    }
    response = api.post(ehr.fhir, json=batch)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0].startswith("405") and statuses[1].startswith("201")


# -- the factory keyword --------------------------------------------------------------------


def test_write_behaviour_keyword(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(ValueError, match="unknown write behaviour"):
        start_sandbox(tmp_path_factory.mktemp("bad-behaviour"), write_behaviour="cerner")
    running = start_sandbox(
        tmp_path_factory.mktemp("epic"), test_controls=True, write_behaviour="epic"
    )
    try:
        api = running.api(running.token("P01-pt", SCOPE))
        assert_refused(create(api, running, service_request(ident())), "ServiceRequest")
        set_faults(running, write_behaviour="fhir-rest")  # the switch overrides the keyword
        assert create(api, running, service_request(ident())).status_code == 201
        set_faults(running)  # cleared: back to the keyword's behaviour
        assert_refused(create(api, running, task(ident())), "Task")
        described = requests.get(f"{running.fhir}/metadata", timeout=10).json()
        assert "epic" in described["implementation"]["description"]
    finally:
        running.handle.stop()
