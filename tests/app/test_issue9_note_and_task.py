"""Issue 9, items 4 and 5: the linkage note names the signing physician (display name from
`fhirUser`); the coach team's Task keeps its link to the referral (`ServiceRequest/<server id>`
in focus and basedOn) through every coach update, read from the Task's history at the sandbox
and at the Medplum peer."""

from __future__ import annotations

import base64
import copy
import dataclasses

import pytest
import requests

from smartapp.db import Database
from smartapp.fhir.client import FhirClient
from smartapp.launch.signer import fhir_user_name, human_name
from smartapp.sandbox.config import DEMO_PHYSICIAN_NAME
from smartapp.staff import worklist
from smartapp.writeback import outbox, profiles
from smartapp.writeback.resources import build_plan, referral_key
from tests import launch_flow
from tests.app.test_medplum_writeback import SETTINGS, signed_referral
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.launch_flow import sign_all
from tests.smart_helpers import token_for
from tests.stacks import referral_of, start_stack

COACH = {"sub": "coach-9", "name": "Robin Coach, CPRS", "user_ref": "urn:staff:coach-9"}


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("issue9-plain"), shared_dir)
    yield stack
    stack.stop()


# -- item 4: the note names the signing physician --------------------------------------------


def test_linkage_note_names_the_signing_physician(plain_stack):
    stack = plain_stack
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P04-pt")
    signed = sign_all(launch, stack.app.url)
    assert "Written to the chart" in signed.text
    fhir = stack.reader("P04-pt")
    [note] = fhir.search("DocumentReference?patient=P04-pt")
    text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
    assert text.splitlines()[1].endswith(f" by {DEMO_PHYSICIAN_NAME}")
    assert note["author"][0]["reference"] == "Practitioner/demo-ed-physician"
    assert note["author"][0]["display"] == DEMO_PHYSICIAN_NAME


def test_signer_name_read_from_the_fhiruser_resource(medplum, plain_stack):
    """Where the EHR lets Handoff read the fhirUser, its name (Medplum, and the sandbox with a
    token that may read Practitioners); where it refuses (a real 401 here), None, and the note
    falls back to the id_token's name claim (the launch above is granted no Practitioner
    read, so its note took that path)."""
    readable = FhirClient(medplum.base_url, "no-auth-on-this-server")
    assert fhir_user_name(readable, "Practitioner/demo-ed-physician") == DEMO_PHYSICIAN_NAME
    sandbox = f"{plain_stack.ehr_url}/fhir"
    token = token_for(plain_stack.ehr_url, "P04-pt", TEST_READER, TEST_READER_REDIRECT)
    reader = FhirClient(sandbox, token["access_token"])
    assert fhir_user_name(reader, "Practitioner/demo-ed-physician") == DEMO_PHYSICIAN_NAME
    refused = FhirClient(sandbox, "not-a-token")
    assert fhir_user_name(refused, "Practitioner/demo-ed-physician") is None


def test_human_name_in_words():
    assert human_name([{"use": "official", "text": " Avery Demo, MD "}]) == "Avery Demo, MD"
    assert (
        human_name(
            [
                {"use": "old", "family": "X"},
                {"use": "official", "family": "Demo", "given": ["Avery", "J"], "suffix": ["MD"]},
            ]
        )
        == "Avery J Demo, MD"
    )
    assert human_name([{"family": 3}]) is None
    assert human_name("Avery") is None


# -- item 5: the Task keeps its link to the referral through coach updates -----------------


def assert_every_version_points_at_the_referral(versions: list[dict], service_request: str):
    assert len(versions) >= 3, len(versions)  # created, then two coach updates
    for task in versions:
        version = task["meta"]["versionId"]
        assert task["focus"]["reference"] == service_request, version
        assert [b["reference"] for b in task["basedOn"]] == [service_request], version
        assert "urn:uuid:" not in str(task), version


def test_task_keeps_its_referral_link_through_coach_updates_sandbox(plain_stack):
    stack = plain_stack
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P05-pt")
    assert "Written to the chart" in sign_all(launch, stack.app.url).text
    services = stack.app.app.extensions["handoff"]
    row = referral_of(stack.database_url, "P05-pt")

    def client(referral, force_refresh=False):
        from smartapp.launch.sessions import client_for_referral

        return client_for_referral(services, referral, force_refresh)

    for action, note in (("accept", None), ("contact", "Met at bedside")):
        worklist.act(services.db, row.id, action, COACH, note=note, result="reached")
        with stack.app.app.app_context():
            done = outbox.deliver(services.db, row.id, client)
        assert done.status == "written", done.last_error

    fhir = stack.reader("P05-pt")
    [task] = fhir.search("Task?patient=P05-pt")
    [service_request] = fhir.search("ServiceRequest?patient=P05-pt")
    versions = [
        fhir.get(f"Task/{task['id']}/_history/{n}")
        for n in range(1, int(task["meta"]["versionId"]) + 1)
    ]
    assert versions[-1]["status"] == "in-progress"
    assert_every_version_points_at_the_referral(versions, f"ServiceRequest/{service_request['id']}")


def test_task_keeps_its_referral_link_through_coach_updates_medplum(tmp_path, medplum):
    db = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    db.create_all()
    # Another visit than test_medplum_writeback's (P01): Handoff's identifiers are per visit,
    # and that test reads back the resources its own identifiers find on the shared server.
    first = signed_referral(medplum.base_url)
    referral = dataclasses.replace(
        first,
        patient_id="P05-pt",
        encounter_id="P05-enc",
        shown=tuple(dataclasses.replace(s, evidence=("Condition/P05-cond1",)) for s in first.shown),
    )
    plan = build_plan(referral, SETTINGS, profiles.profile("fhir-rest"))
    decision = {"decisions": [{"kind": "prc-consult", "accepted": True}]}
    row, _ = outbox.submit(
        db,
        visit_key=referral_key(medplum.base_url, "P05-enc", "P05-pt", "visit"),
        context_id="ctx",
        iss=medplum.base_url,
        patient_id="P05-pt",
        encounter_id="P05-enc",
        user_ref=referral.user_ref,
        decision=decision,
        plan=copy.deepcopy(plan),
    )
    client = FhirClient(medplum.base_url, "no-auth-on-this-server")
    assert outbox.deliver(db, row.id, lambda r, force_refresh=False: client).status == "written"
    for action, note in (("accept", None), ("contact", "Called the warm line")):
        worklist.act(db, row.id, action, COACH, note=note, result="reached")
        done = outbox.deliver(db, row.id, lambda r, force_refresh=False: client)
        assert done.status == "written", done.last_error
    ids = {op["type"]: op["id"] for op in done.plan["operations"] if op.get("method") != "PUT"}
    history = requests.get(medplum.url(f"Task/{ids['Task']}/_history"), timeout=10).json()
    versions = [entry["resource"] for entry in history["entry"]]
    assert {v["status"] for v in versions} == {"requested", "accepted", "in-progress"}
    assert_every_version_points_at_the_referral(versions, f"ServiceRequest/{ids['ServiceRequest']}")
