"""Issue 9, items 4 and 5: the linkage note names the signing physician (display name from
`fhirUser`); the coach team's Task keeps its link to the referral (`ServiceRequest/<server id>`
in focus and basedOn) through every coach update, read from the Task's history at the sandbox
and at the Medplum peer."""

from __future__ import annotations

import copy

import pytest
import requests
from sqlalchemy import select

from smartapp import outbox, profiles, worklist
from smartapp.db import Database, Referral
from smartapp.fhir import FhirClient
from smartapp.writeback import build_plan, referral_key
from tests import launch_flow
from tests.app.test_medplum_writeback import SETTINGS, signed_referral
from tests.launch_flow import sign_all
from tests.stacks import start_stack

COACH = {"sub": "coach-9", "name": "Robin Coach, CPRS", "user_ref": "urn:staff:coach-9"}


def referral_of(database_url: str, patient_id: str) -> Referral:
    with Database(database_url).session() as session:
        return session.scalars(select(Referral).where(Referral.patient_id == patient_id)).one()


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("issue9-plain"), shared_dir)
    yield stack
    stack.stop()


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
        from smartapp.sessions import client_for_referral

        return client_for_referral(services, referral, force_refresh)

    for action, note in (("accept", None), ("contact", "Met at bedside")):
        worklist.act(services.db, row.id, action, COACH, note=note)
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
    assert_every_version_points_at_the_referral(
        versions, f"ServiceRequest/{service_request['id']}"
    )


def test_task_keeps_its_referral_link_through_coach_updates_medplum(tmp_path, medplum):
    db = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    db.create_all()
    referral = signed_referral(medplum.base_url)
    plan = build_plan(referral, SETTINGS, profiles.profile("fhir-rest"))
    decision = {"decisions": [{"kind": "prc-consult", "accepted": True}]}
    row, _ = outbox.submit(
        db, visit_key=referral_key(medplum.base_url, "P01-enc", "P01-pt", "task-history"),
        context_id="ctx", iss=medplum.base_url, patient_id="P01-pt", encounter_id="P01-enc",
        user_ref=referral.user_ref, decision=decision, plan=copy.deepcopy(plan))
    client = FhirClient(medplum.base_url, "no-auth-on-this-server")
    assert outbox.deliver(db, row.id, lambda r, force_refresh=False: client).status == "written"
    for action, note in (("accept", None), ("contact", "Called the warm line")):
        worklist.act(db, row.id, action, COACH, note=note)
        done = outbox.deliver(db, row.id, lambda r, force_refresh=False: client)
        assert done.status == "written", done.last_error
    ids = {op["type"]: op["id"] for op in done.plan["operations"] if op.get("method") != "PUT"}
    history = requests.get(medplum.url(f"Task/{ids['Task']}/_history"), timeout=10).json()
    versions = [entry["resource"] for entry in history["entry"]]
    assert {v["status"] for v in versions} == {"requested", "accepted", "in-progress"}
    assert_every_version_points_at_the_referral(versions, f"ServiceRequest/{ids['ServiceRequest']}")


