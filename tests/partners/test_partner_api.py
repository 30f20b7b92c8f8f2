"""The partner FHIR API over real HTTP: a partner's own backend client (its ES384 key, its own
client assertion) sees a referral only while the patient's consent names it, and then only the
Task, its ServiceRequest and a minimal Patient; another partner cannot read or change it; the
partner's update goes through the lifecycle to the worklist, the log and the EHR's Task."""

from __future__ import annotations

from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import CoachHandoff, Database
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.smart_helpers import FhirReader, token_for

MINIMAL_PATIENT_KEYS = {"resourceType", "id", "meta", "name", "birthDate", "telecom"}


def events(stack, type_: str, referral_id: str) -> list[dict]:
    with Database(stack.database_url).session() as session:
        rows = session.scalars(select(LogEvent).where(LogEvent.type == type_)).all()
        return [dict(r.data) for r in rows if r.data.get("referral") == referral_id]


def search(client, token: str, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    answer = client.get(f"Task?{query}", token)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_consent_opens_the_referral_to_its_partner_only_and_revoking_closes_it(partner_stack):
    stack, a, b = partner_stack, partner_stack.a, partner_stack.b
    referral_id = stack.referral("P02-pt")
    token_a, token_b = a.token(), b.token()

    # No consent: nothing of this referral leaves Handoff (other tests on the shared stack may
    # have consented theirs).
    before = search(a, token_a, owner=a.organization)["entry"]
    assert all(referral_id not in e["fullUrl"] for e in before)
    assert a.get(f"Task/{referral_id}", token_a).status_code == 404
    assert a.get(f"Patient/{referral_id}", token_a).status_code == 404

    coach = stack.consent(referral_id, a)
    page = coach.get(f"/staff/handoffs/{referral_id}/consent").get_data(as_text=True)
    assert "Bridge Health" in page and 'data-status="active"' in page
    recorded = events(stack, "consent-recorded", referral_id)
    assert [e["partner"] for e in recorded] == ["bridge-health"]
    assert recorded[0]["purpose"] == "TREAT" and recorded[0]["actor_kind"] == "coach"

    found = search(
        a,
        token_a,
        owner=a.organization,
        status="requested,accepted,in-progress",
        _include="Task:focus&_include=Task:patient",
    )
    kinds = sorted(e["resource"]["resourceType"] for e in found["entry"])
    assert kinds == ["Patient", "ServiceRequest", "Task"]
    task = next(e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "Task")
    assert task["id"] == referral_id and task["owner"]["reference"] == a.organization
    assert task["focus"] == {"reference": f"ServiceRequest/{referral_id}"}
    labels = {label["code"] for label in task["meta"]["security"]}
    assert {"R", "NORDSCLCD"} <= labels
    patient = next(
        e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert set(patient) <= MINIMAL_PATIENT_KEYS and patient["birthDate"]
    assert patient["name"][0]["text"] == "Test P02"
    assert patient["telecom"][0]["system"] == "phone" and patient["telecom"][0]["value"]
    request = next(
        e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert not {"reasonReference", "note", "encounter", "supportingInfo"} & set(request)
    assert request["status"] == "active"
    assert request["performer"][0]["reference"] == a.organization
    reads = events(stack, "partner-read", referral_id)
    assert (
        reads
        and reads[-1]["partner"] == "bridge-health"
        and reads[-1]["task"] == f"Task/{referral_id}"
    )

    # Another partner: nothing by search, 403 by id.
    assert search(b, token_b)["entry"] == []
    assert search(b, token_b, owner=a.organization)["entry"] == []
    refused = b.get(f"Task/{referral_id}", token_b)
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert b.get(f"Patient/{referral_id}", token_b).status_code == 403

    # Revoked: refused at once, with the token already issued.
    consent_id = coach.get(f"/staff/handoffs/{referral_id}/consent").get_data(as_text=True)
    consent_id = consent_id.split('data-consent="')[1].split('"')[0]
    answer = coach.post(
        f"/staff/handoffs/{referral_id}/consent/{consent_id}/revoke",
        data={"csrf_token": "t" * 43, "reason": "Patient changed their mind"},
    )
    assert answer.status_code == 302
    assert a.get(f"Task/{referral_id}", token_a).status_code == 404
    assert all(referral_id not in e["fullUrl"] for e in search(a, token_a)["entry"])
    revoked = events(stack, "consent-revoked", referral_id)
    assert [e["consent"] for e in revoked] == [consent_id]
    assert_consent_resource(stack, referral_id, consent_id)


def assert_consent_resource(stack, referral_id: str, consent_id: str) -> None:
    """The FHIR Consent Handoff keeps: a Part 2 privacy consent naming the recipient, the
    purpose and what is shared; inactive, its provision ended, once revoked."""
    from smartapp.partners import consent as consents

    (kept,) = consents.for_referral(Database(stack.database_url), referral_id)
    consent = kept.resource
    assert kept.id == consent_id and kept.status == "revoked"
    assert consent["resourceType"] == "Consent" and consent["status"] == "inactive"
    assert consent["scope"]["coding"][0]["code"] == "patient-privacy"
    assert consent["patient"]["reference"] == "Patient/P02-pt"
    assert consent["policy"][0]["uri"].endswith("part-2")
    provision = consent["provision"]
    assert provision["type"] == "permit"
    assert provision["actor"][0]["role"]["coding"][0]["code"] == "IRCP"
    assert provision["actor"][0]["reference"]["reference"] == stack.a.organization
    assert provision["purpose"][0]["code"] == "TREAT"
    assert sorted(c["code"] for c in provision["class"]) == ["Patient", "ServiceRequest", "Task"]
    assert provision["period"]["start"] <= provision["period"]["end"]
    assert {"R", "42CFRPart2"} <= {label["code"] for label in consent["meta"]["security"]}


def test_partner_update_reaches_the_worklist_the_log_and_the_ehr_task(partner_stack):
    stack, a, b = partner_stack, partner_stack.a, partner_stack.b
    referral_id = stack.referral("P03-pt")
    coach = stack.consent(referral_id, a, purpose="COC", program="bridge-clinic")
    assert (
        coach.post(f"/worklist/{referral_id}/accept", data={"csrf_token": "t" * 43}).status_code
        == 302
    )
    token_a, token_b = a.token(), b.token()
    read = a.get(f"Task/{referral_id}", token_a)
    assert read.status_code == 200
    task, version = read.json(), read.json()["meta"]["versionId"]
    assert read.headers["ETag"] == f'W/"{version}"'

    # Partner B cannot change it, whatever version it claims; nothing changes.
    stolen = dict(task, status="rejected", statusReason={"text": "not ours"})
    assert b.put(f"Task/{referral_id}", stolen, version, token_b).status_code == 403
    assert a.get(f"Task/{referral_id}", token_a).json()["status"] == "accepted"

    # No If-Match, or a stale one: refused, nothing changes.
    scheduled = dict(task, businessStatus={"coding": [{"code": "appointment-scheduled"}]})
    assert a.put(f"Task/{referral_id}", scheduled, None, token_a).status_code == 428
    assert a.put(f"Task/{referral_id}", scheduled, "stale", token_a).status_code == 412
    # Only the reported fields may change.
    moved = dict(task, owner={"reference": "Organization/someone-else"})
    assert a.put(f"Task/{referral_id}", moved, version, token_a).status_code == 422

    answer = a.put(f"Task/{referral_id}", scheduled, version, token_a)
    assert answer.status_code == 200, answer.text
    assert answer.json()["businessStatus"]["coding"][0]["code"] == "appointment-scheduled"
    assert answer.json()["status"] == "in-progress"

    # Attended, by JSON Patch on the new version: the referral is completed.
    new_version = answer.json()["meta"]["versionId"]
    patched = a.patch(
        f"Task/{referral_id}",
        [
            {"op": "replace", "path": "/status", "value": "completed"},
            {
                "op": "replace",
                "path": "/businessStatus",
                "value": {"coding": [{"code": "appointment-attended"}]},
            },
        ],
        new_version,
        token_a,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "completed"
    request = a.get(f"ServiceRequest/{referral_id}", token_a).json()
    assert request["status"] == "completed"
    assert {"reference": "HealthcareService/bridge-clinic"} in request["performer"]

    with Database(stack.database_url).session() as session:
        row = session.get(CoachHandoff, referral_id)
        assert (row.status, row.business_status) == ("completed", "appointment-attended")
    status_events = events(stack, "handoff-status", referral_id)
    assert [e["business_status"] for e in status_events][-2:] == [
        "appointment-scheduled",
        "appointment-attended",
    ]
    assert all(
        e["actor_kind"] == "partner" and e["partner"] == "bridge-health" for e in status_events
    )

    # The EHR's Task followed, through the outbox.
    token = token_for(stack.ehr_url, "P03-pt", TEST_READER, TEST_READER_REDIRECT)
    tasks = FhirReader(f"{stack.ehr_url}/fhir", token["access_token"]).search("Task?patient=P03-pt")
    assert len(tasks) == 1 and tasks[0]["status"] == "completed"
    reader = FhirReader(f"{stack.ehr_url}/fhir", token["access_token"])
    provenances = reader.search(f"Provenance?target=Task/{tasks[0]['id']}")
    agents = [agent for p in provenances for agent in p.get("agent", [])]
    assert any(agent.get("who", {}).get("display") == "Bridge Health" for agent in agents), agents
    requests_at_ehr = reader.search("ServiceRequest?patient=P03-pt")
    assert [r["status"] for r in requests_at_ehr] == ["completed"]


def test_two_updates_on_one_version_one_wins_the_other_gets_412(partner_stack):
    from concurrent.futures import ThreadPoolExecutor

    stack, a = partner_stack, partner_stack.a
    referral_id = stack.referral("P12-pt")
    stack.consent(referral_id, a)
    token = a.token()
    task = a.get(f"Task/{referral_id}", token).json()
    version = task["meta"]["versionId"]
    bodies = [
        dict(task, status="accepted"),
        dict(task, businessStatus={"coding": [{"code": "appointment-scheduled"}]}),
    ]
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda body: a.put(f"Task/{referral_id}", body, version, token), bodies)
        )
    assert sorted(answer.status_code for answer in answers) == [200, 412]
    assert len(events(stack, "handoff-status", referral_id)) == 1


def test_the_physician_records_the_consent_from_the_launch_after_sign(partner_stack):
    import re

    import requests

    from tests import launch_flow

    stack, a = partner_stack, partner_stack.a
    launch = launch_flow.full(stack.app_url, stack.ehr_url, "P04-pt")
    context_id = launch.final.url.rsplit("/", 1)[1]
    form_url = f"{stack.app_url}/c/{context_id}/consent"
    before = launch.browser.get(form_url, timeout=15)
    assert before.status_code == 404  # nothing signed yet: nothing to consent to
    assert launch_flow.sign_all(launch, stack.app_url).status_code == 200
    assert requests.get(form_url, timeout=15).status_code == 403  # another browser
    page = launch.browser.get(form_url, timeout=15)
    assert page.status_code == 200 and "Back to the screen" in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = launch.browser.post(
        form_url,
        data={"csrf_token": token, "partner": a.partner_id, "purpose": "TREAT"},
        timeout=15,
    )
    assert (
        answer.status_code == 200 and "Consent to share with Bridge Health recorded" in answer.text
    )
    referral_id = stack.referral("P04-pt")
    (recorded,) = events(stack, "consent-recorded", referral_id)
    assert recorded["actor_kind"] == "physician"
    assert a.get(f"Task/{referral_id}").status_code == 200


def test_the_worklist_can_ask_who_a_referral_is_shared_with(partner_stack):
    from smartapp.partners import consent as consents

    stack = partner_stack
    referral_id = stack.referral("P03-pt")  # shared with partner A above, or now
    stack.consent(referral_id, stack.a)
    found = consents.shared_with(Database(stack.database_url), [referral_id, "no-such"])
    assert found == {referral_id: ["bridge-health"]}


def test_the_referral_log_still_covers_the_tables_after_partner_changes(partner_stack):
    """Partner updates, consents and reads keep the log's cross-check with the handoff rows
    clean (`handoff audit verify` runs it)."""
    from smartapp.audit import coverage

    stack = partner_stack
    referral_id = stack.referral("P03-pt")
    stack.consent(referral_id, stack.a)
    assert stack.a.get(f"Task/{referral_id}").status_code == 200
    with Database(stack.database_url).session() as session:
        findings, note = coverage.check(session)
    assert findings == [] and note is None
