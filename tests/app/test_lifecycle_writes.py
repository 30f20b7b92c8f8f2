"""Issue 11, items 2 and 3 on the write side: the referral lifecycle on FHIR, every write naming
who acted. Over real HTTP: the sandbox EHR (behind the fault proxy) and the Medplum peer, the
`fhir-rest` profile. Each change to the handoff is a versioned PUT of the Task (If-Match), the
ServiceRequest follows the Task's end (completed -> completed, cancelled -> revoked), and each
change has its Provenance naming the coach, the partner organisation or the physician, with
Handoff as the assembler. A conflict (another party changed the Task meanwhile) re-reads and
loses neither party's change; faults on the way (5xx, 429, a cut after the commit, 412) leave
every change written exactly once, in the order it was made."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import Database
from smartapp.fhir.client import FhirClient
from smartapp.writeback import outbox, profiles
from smartapp.writeback.actor import Actor
from smartapp.writeback.resources import build_plan, referral_key
from smartapp.writeback.task_update import TaskChanges
from tests import launch_flow
from tests.app.test_medplum_writeback import SETTINGS, signed_referral
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.faultproxy import FaultProxy
from tests.launch_flow import sign_all
from tests.smart_helpers import token_for
from tests.stacks import referral_of, start_stack

COACH = Actor("coach", "Robin Coach, CPRS", "urn:staff:coach-9")
PARTNER = Actor("partner", "Example Bridge Clinic", "urn:handoff:partner:bridge-clinic")
PHYSICIAN = Actor("physician", "Avery Demo, MD", "Practitioner/demo-ed-physician")
# Changes are made after the signature (the EHR checks Task.lastModified >= authoredOn). The
# module is imported when pytest collects, and a loaded CI run can reach these tests many
# minutes later: a day ahead stays after every signature of the run.
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


ACCEPT = TaskChanges(
    "accepted", at(1), owner_ref=COACH.reference, owner_name=COACH.display, actor=COACH
)
CONTACT = TaskChanges(
    "in-progress",
    at(2),
    owner_ref=COACH.reference,
    owner_name=COACH.display,
    actor=COACH,
    business_status="contacted",
    contact_note="Met at bedside; agreed to a bridge clinic visit",
)
SCHEDULED = TaskChanges(
    "in-progress", at(3), actor=PARTNER, business_status="appointment-scheduled"
)
ATTENDED = TaskChanges(
    "completed",
    at(4),
    actor=PARTNER,
    business_status="appointment-attended",
    output="First appointment attended at Example Bridge Clinic",
)
CANCELLED = TaskChanges(
    "cancelled", at(5), actor=PHYSICIAN, status_reason="Admitted or transferred"
)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(outbox, "BACKOFF_BASE_SECONDS", 0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("lifecycle"), shared_dir, proxy=True)
    yield stack
    stack.stop()


# -- helpers -------------------------------------------------------------------------------


def signed(stack, patient: str) -> str:
    """A signed referral with the coach consult, written to the sandbox; its id."""
    launch = launch_flow.full(stack.app.url, stack.ehr_url, patient)
    assert "Written to the chart" in sign_all(launch, stack.app.url).text
    return referral_of(stack.database_url, patient).id


def client_for(stack):
    services = stack.app.app.extensions["handoff"]

    def client(referral, force_refresh=False):
        from smartapp.launch.sessions import client_for_referral

        with stack.app.app.app_context():
            return client_for_referral(services, referral, force_refresh)

    return client


def change(db: Database, referral_id: str, *changes: TaskChanges) -> None:
    """Queue changes, as the lifecycle's `record` does (one unit of work each)."""
    for item in changes:
        with db.session() as session:
            assert outbox.enqueue_task_update(session, referral_id, item) is True


def deliver_until_written(db: Database, referral_id: str, client, rounds: int = 20):
    """The worker's retries, at once (the lease is the only gate of `deliver`)."""
    row = None
    for _ in range(rounds):
        row = outbox.deliver(db, referral_id, client, confirm_wait=0)
        if row.status == "written":
            return row
        assert row.status == "queued", row.last_error
    raise AssertionError(f"not written after {rounds} attempts: {row.last_error}")


def ids_of(row) -> dict[str, str]:
    """Type -> server id of what the referral created."""
    return {
        op["type"]: op["id"]
        for op in row.plan["operations"]
        if op.get("method", "POST") == "POST" and not op.get("about") and op.get("id")
    }


def history(get, rtype: str, rid: str) -> list[dict]:
    """The resource's versions, oldest first (by lastUpdated, then version number: Medplum's
    history Bundle is not always newest first)."""
    bundle = get(f"{rtype}/{rid}/_history")
    versions = [e["resource"] for e in bundle["entry"] if "resource" in e]

    def age(resource: dict) -> tuple[str, int]:
        version = resource["meta"]["versionId"]
        return resource["meta"]["lastUpdated"], int(version) if version.isdigit() else 0

    return sorted(versions, key=age)


def change_provenances(search, row) -> list[dict]:
    """The Provenances of the referral's changes, each found by its tag (exactly one each),
    in the order the changes were made."""
    found = []
    for op in row.plan["operations"]:
        if op.get("about") is not None:
            matches = search(f"Provenance?{op['conditional']}")
            assert len(matches) == 1, (op["key"], len(matches))
            found.append(matches[0])
    return found


def business_code(task: dict) -> str | None:
    concept = task.get("businessStatus")
    return concept["coding"][0]["code"] if concept else None


def author(provenance: dict) -> dict:
    roles = {a["type"]["coding"][0]["code"]: a["who"] for a in provenance["agent"]}
    assert roles["assembler"] == {"type": "Device", "display": "Handoff"}
    return roles["author"]


def assert_lifecycle_written(get, search, row) -> None:
    """accepted -> in-progress (contacted) -> scheduled -> completed (attended): one Task
    version per change, in order, linked to the ServiceRequest by its server id; the
    ServiceRequest completed; a Provenance per change naming who acted."""
    ids = ids_of(row)
    order = f"ServiceRequest/{ids['ServiceRequest']}"
    versions = history(get, "Task", ids["Task"])
    steps = [(v["status"], business_code(v)) for v in versions]
    assert steps == [
        ("requested", None),
        ("accepted", None),
        ("in-progress", "contacted"),
        ("in-progress", "appointment-scheduled"),
        ("completed", "appointment-attended"),
    ]
    for version in versions:
        assert version["focus"]["reference"] == order
        assert [b["reference"] for b in version["basedOn"]] == [order]
        assert "urn:uuid:" not in str(version)
    task = versions[-1]
    assert task["businessStatus"]["text"] == "First appointment attended"
    assert task["owner"]["display"] == COACH.display
    assert task["output"] == [
        {
            "type": {"text": "Outcome"},
            "valueString": "First appointment attended at Example Bridge Clinic",
        }
    ]
    assert [n["text"] for n in task["note"]] == [
        "Coach contact: Met at bedside; agreed to a bridge clinic visit"
    ]
    assert get(order)["status"] == "completed"
    provenances = change_provenances(search, row)
    assert [author(p)["display"] for p in provenances] == [
        COACH.display,
        COACH.display,
        PARTNER.display,
        PARTNER.display,
    ]
    assert author(provenances[2])["type"] == "Organization"
    task_versions = [v["meta"]["versionId"] for v in versions[1:]]
    for provenance, version in zip(provenances, task_versions, strict=True):
        targets = [t["reference"] for t in provenance["target"]]
        assert targets[0] == f"Task/{ids['Task']}/_history/{version}"
        codes = {c["code"] for c in provenance["meta"]["security"]}
        assert {"R"} <= codes and codes & {"SUD", "OPIOIDUD"}
    last_targets = [t["reference"] for t in provenances[-1]["target"]]
    assert last_targets[1].startswith(f"{order}/_history/")


# -- the lifecycle at the sandbox ------------------------------------------------------------


def test_lifecycle_steps_complete_the_task_and_the_order_sandbox(stack):
    referral_id = signed(stack, "P05-pt")
    db = Database(stack.database_url)
    client = client_for(stack)
    for item in (ACCEPT, CONTACT, SCHEDULED, ATTENDED):
        change(db, referral_id, item)
        deliver_until_written(db, referral_id, client)
    fhir = stack.reader("P05-pt")
    row = referral_of(stack.database_url, "P05-pt")
    assert_lifecycle_written(fhir.get, fhir.search, row)
    with db.session() as session:
        attempts = session.scalars(
            select(LogEvent).where(LogEvent.type == "write-attempt").order_by(LogEvent.seq)
        ).all()
    named = [e.data.get("user_name") for e in attempts if e.data.get("referral") == referral_id]
    assert named[-4:] == [COACH.display, COACH.display, PARTNER.display, PARTNER.display]
    assert attempts[-1].data["actor_kind"] == "partner"


def test_cancelled_revokes_the_order_with_the_reason_sandbox(stack):
    referral_id = signed(stack, "P04-pt")
    db = Database(stack.database_url)
    change(db, referral_id, ACCEPT, CANCELLED)
    row = deliver_until_written(db, referral_id, client_for(stack))
    fhir = stack.reader("P04-pt")
    ids = ids_of(row)
    task = fhir.get(f"Task/{ids['Task']}")
    assert task["status"] == "cancelled"
    assert task["statusReason"] == {"text": "Admitted or transferred"}
    assert fhir.get(f"ServiceRequest/{ids['ServiceRequest']}")["status"] == "revoked"
    last = change_provenances(fhir.search, row)[-1]
    assert author(last) == {"reference": PHYSICIAN.reference, "display": PHYSICIAN.display}


def other_party_put(stack, patient: str, task_id: str, edit) -> dict:
    """Another party (the EHR, a partner's system) changes the Task: its own read and PUT,
    with its own token."""
    token = token_for(
        stack.ehr_url,
        patient,
        TEST_READER,
        TEST_READER_REDIRECT,
        scope="launch openid fhirUser patient/*.cruds",
    )["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    url = f"{stack.ehr_url}/fhir/Task/{task_id}"
    task = requests.get(url, headers=headers, timeout=10).json()
    edit(task)
    answer = requests.put(url, json=task, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def their_note(task: dict) -> None:
    task.setdefault("note", []).append({"text": "EHR: patient asked for a morning call"})


def their_step(task: dict) -> None:
    task["businessStatus"] = {"text": "First appointment scheduled"} | {
        "coding": [{"system": "urn:handoff:task-business-status", "code": "appointment-scheduled"}]
    }


def test_a_conflict_rereads_and_loses_neither_change_sandbox(stack):
    """Between Handoff's last write and its next, another party adds a note and sets a later
    step: Handoff's PUT (If-Match on the version it wrote) is refused with 412; it re-reads
    and re-applies only its own fields: both notes, the later step kept, our status."""
    referral_id = signed(stack, "P07-pt")
    db = Database(stack.database_url)
    client = client_for(stack)
    change(db, referral_id, ACCEPT)
    row = deliver_until_written(db, referral_id, client)
    task_id = ids_of(row)["Task"]
    other_party_put(stack, "P07-pt", task_id, lambda t: (their_note(t), their_step(t)))
    stack.proxy.reset_stats()
    change(db, referral_id, CONTACT)
    deliver_until_written(db, referral_id, client)
    puts = [
        e["status"]
        for e in stack.proxy.log
        if e["method"] == "PUT" and e["path"].startswith("/fhir/Task/")
    ]
    assert puts == [412, 200], stack.proxy.log
    task = stack.reader("P07-pt").get(f"Task/{task_id}")
    assert task["status"] == "in-progress"
    assert business_code(task) == "appointment-scheduled"  # their later step stays
    assert [n["text"] for n in task["note"]] == [
        "EHR: patient asked for a morning call",
        "Coach contact: Met at bedside; agreed to a bridge clinic visit",
    ]
    assert task["owner"]["display"] == COACH.display
    # And the other way round: they add a note, we set a step; both stay.
    other_party_put(stack, "P07-pt", task_id, lambda t: t["note"].append({"text": "EHR: 2nd"}))
    change(db, referral_id, dataclasses.replace(ATTENDED, actor=PARTNER))
    deliver_until_written(db, referral_id, client)
    task = stack.reader("P07-pt").get(f"Task/{task_id}")
    assert (task["status"], business_code(task)) == ("completed", "appointment-attended")
    assert [n["text"] for n in task["note"]][-1] == "EHR: 2nd"
    assert len(task["note"]) == 3


# -- faults on the update path ---------------------------------------------------------------

FAULTS = [
    ("P11-pt", {"kind": "status", "status": 503, "method": "PUT", "path": "/fhir/Task/"}),
    (
        "P12-pt",
        {"kind": "status", "status": 429, "retry_after": 1, "method": "PUT", "path": "/fhir/Task"},
    ),
    ("P13-pt", {"kind": "drop_after_forward", "method": "PUT", "path": "/fhir/Task/"}),
    ("P14-pt", {"kind": "status", "status": 412, "method": "PUT", "path": "/fhir/Task/"}),
    ("P15-pt", {"kind": "drop_after_forward", "method": "PUT", "path": "/fhir/ServiceRequest/"}),
    ("P17-pt", {"kind": "drop_after_forward", "method": "POST", "path": "/fhir/Provenance"}),
    ("P18-pt", {"kind": "status", "status": 500, "method": "GET", "path": "/fhir/Task/"}),
    ("P21-pt", {"kind": "status", "status": 409, "method": "PUT", "path": "/fhir/Task/"}),
]


@pytest.mark.parametrize(
    ("patient", "fault"),
    FAULTS,
    ids=["503", "429", "cut-task", "412", "cut-order", "cut-provenance", "500-on-reread", "409"],
)
def test_each_change_lands_exactly_once_in_order_through_faults(stack, patient, fault):
    """Four changes queued at once; the first two requests of the path fail; retried, each
    change lands once (one Task version, one Provenance, the order completed once), in the
    order made."""
    referral_id = signed(stack, patient)
    db = Database(stack.database_url)
    change(db, referral_id, ACCEPT, CONTACT, SCHEDULED, ATTENDED)
    stack.proxy.reset_stats()
    stack.proxy.add_fault(times=2, **fault)
    if fault["kind"] == "status" and fault["method"] == "GET":  # a conflict first, to re-read
        stack.proxy.add_fault(kind="status", status=412, method="PUT", path="/fhir/Task/")
    row = deliver_until_written(db, referral_id, client_for(stack))
    assert stack.proxy.stats[fault["kind"]] >= 1
    stack.proxy.clear_faults()  # what is left unused must not hit the reads below
    if patient == "P13-pt":  # the retry of a PUT that landed: refused (412), found, not sent again
        retried = [
            e.get("status")
            for e in stack.proxy.log
            if e["method"] == "PUT" and e["path"].startswith("/fhir/Task/") and not e.get("fault")
        ]
        assert retried.count(412) == 1 and retried.count(200) == 3, stack.proxy.log
    assert stack.proxy.wait_idle(10)
    fhir = stack.reader(patient)
    assert_lifecycle_written(fhir.get, fhir.search, row)
    order = fhir.get(f"ServiceRequest/{ids_of(row)['ServiceRequest']}")
    assert order["meta"]["versionId"] == "2"  # active, then completed: once


# -- the same update path at the Medplum peer -------------------------------------------------


def medplum_referral(tmp_path, medplum, patient: str, base: str | None = None):
    """A referral for `patient`'s visit written to Medplum (through `base`, a fault proxy's
    FHIR base, where given): (db, referral id, client)."""
    db = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    db.create_all()
    first = signed_referral(medplum.base_url)
    encounter = patient.replace("-pt", "-enc")
    referral = dataclasses.replace(
        first,
        patient_id=patient,
        encounter_id=encounter,
        shown=tuple(
            dataclasses.replace(s, evidence=(f"Condition/{patient.replace('-pt', '-cond1')}",))
            for s in first.shown
        ),
    )
    plan = build_plan(referral, SETTINGS, profiles.profile("fhir-rest"))
    row, _ = outbox.submit(
        db,
        visit_key=referral_key(medplum.base_url, encounter, patient, "visit"),
        context_id="ctx",
        iss=medplum.base_url,
        patient_id=patient,
        encounter_id=encounter,
        user_ref=referral.user_ref,
        decision={"decisions": [{"kind": "prc-consult", "accepted": True}]},
        plan=copy.deepcopy(plan),
    )
    fhir = FhirClient(base or medplum.base_url, "no-auth-on-this-server")
    client = lambda r, force_refresh=False: fhir  # noqa: E731
    assert deliver_until_written(db, row.id, client).status == "written"
    return db, row.id, client


def medplum_get(medplum):
    return lambda path: requests.get(medplum.url(path), timeout=10).json()


def medplum_search(medplum):
    def search(path: str) -> list[dict]:
        bundle = requests.get(medplum.url(path), timeout=10).json()
        return [e["resource"] for e in bundle.get("entry", [])]

    return search


def test_lifecycle_and_a_conflict_at_medplum(tmp_path, medplum):
    db, referral_id, client = medplum_referral(tmp_path, medplum, "P19-pt")
    change(db, referral_id, ACCEPT)
    row = deliver_until_written(db, referral_id, client)
    task_url = medplum.url(f"Task/{ids_of(row)['Task']}")
    task = requests.get(task_url, timeout=10).json()
    their_step(task)
    task.setdefault("note", []).append({"text": "Partner: called the patient"})
    assert requests.put(task_url, json=task, timeout=10).status_code == 200
    change(db, referral_id, CONTACT)
    deliver_until_written(db, referral_id, client)
    merged = requests.get(task_url, timeout=10).json()
    assert business_code(merged) == "appointment-scheduled"
    assert [n["text"] for n in merged["note"]] == [
        "Partner: called the patient",
        "Coach contact: Met at bedside; agreed to a bridge clinic visit",
    ]
    change(db, referral_id, ATTENDED)
    row = deliver_until_written(db, referral_id, client)
    versions = history(medplum_get(medplum), "Task", ids_of(row)["Task"])
    # Ours, with the partner's version (a note and a step, still accepted) between.
    assert [v["status"] for v in versions] == [
        "requested",
        "accepted",
        "accepted",
        "in-progress",
        "completed",
    ]
    order = requests.get(medplum.url(f"ServiceRequest/{ids_of(row)['ServiceRequest']}"), timeout=10)
    assert order.json()["status"] == "completed"
    provenances = change_provenances(medplum_search(medplum), row)
    assert [author(p)["display"] for p in provenances] == [
        COACH.display,
        COACH.display,
        PARTNER.display,
    ]


def test_faults_in_front_of_medplum_each_change_once(tmp_path, medplum):
    origin = medplum.base_url.rsplit("/fhir", 1)[0]
    with FaultProxy(origin) as proxy:
        db, referral_id, client = medplum_referral(
            tmp_path, medplum, "P20-pt", base=f"{proxy.url}/fhir"
        )
        change(db, referral_id, ACCEPT, CONTACT, SCHEDULED, ATTENDED)
        proxy.add_fault(kind="drop_after_forward", method="PUT", path="/fhir/Task/", times=2)
        proxy.add_fault(kind="status", status=503, method="PUT", path="/fhir/ServiceRequest/")
        proxy.add_fault(kind="drop_after_forward", method="POST", path="/fhir/Provenance")
        row = deliver_until_written(db, referral_id, client)
        assert proxy.stats["drop_after_forward"] == 3
        assert proxy.wait_idle(10)
    assert_lifecycle_written(medplum_get(medplum), medplum_search(medplum), row)
