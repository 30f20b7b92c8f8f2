"""The coach worklist: a signed referral appears as an open handoff; a coach accepts it, records
contact and links the patient to a program; each step updates the Task at the EHR and the log;
roles keep everyone else out."""

from __future__ import annotations

import re

from sqlalchemy import select

from smartapp.db import LogEvent
from tests import launch_flow
from tests.launch_flow import Controls
from tests.staff_login import STAFF_KEY, staff_session_token

COACH = {
    "sub": "coach-1",
    "name": "Jordan Rivera, CPRS",
    "user_ref": "urn:staff:coach-1",
    "roles": ["coach"],
}
OTHER_COACH = {
    "sub": "coach-2",
    "name": "Sam Lee, CPRS",
    "user_ref": "urn:staff:coach-2",
    "roles": ["coach"],
}


def as_staff(app, staff: dict | None):
    client = app.test_client()
    with client.session_transaction() as session:
        if staff:
            session[STAFF_KEY] = staff_session_token(app, staff)
        session["csrf"] = "t" * 43
    return client


def post(client, path: str, **form):
    return client.post(path, data={"csrf_token": "t" * 43, **form})


def row_of(html: str, patient_id: str) -> str:
    match = re.search(rf'<tr data-referral="([^"]+)" data-patient-id="{patient_id}"', html)
    assert match, f"{patient_id} not on the worklist"
    return match.group(1)


def test_coach_works_a_handoff_and_the_task_follows(sandbox, handoff):
    Controls(sandbox.url).clear()
    launch = launch_flow.full(handoff.url, sandbox.url, "P03-pt")
    signed = launch_flow.sign_all(launch, handoff.url)
    assert "Written to the chart" in signed.text

    coach = as_staff(handoff.app, COACH)
    page = coach.get("/worklist/").get_data(as_text=True)
    referral_id = row_of(page, "P03-pt")
    assert "Test P03" in page and "in person" in page

    assert post(coach, f"/worklist/{referral_id}/accept").status_code == 302
    other = as_staff(handoff.app, OTHER_COACH)
    refused = post(other, f"/worklist/{referral_id}/contact", note="hello", result="reached")
    assert "belongs to Jordan Rivera" in other.get("/worklist/").get_data(as_text=True)
    assert refused.status_code == 302
    post(coach, f"/worklist/{referral_id}/contact", note="Met at bedside, agrees", result="reached")
    post(coach, f"/worklist/{referral_id}/link", program="bridge-clinic")
    page = coach.get("/worklist/").get_data(as_text=True)
    assert f'data-referral="{referral_id}"' not in page  # closed: off the open list
    loads = page.split("Open handoffs per coach")[1].split("</section>")[0]
    assert "Jordan Rivera, CPRS</strong>: 0 of 8" in loads  # on shift, nothing open

    # The Task at the EHR followed every step (PUTs through the outbox).
    from tests.conftest import TEST_READER, TEST_READER_REDIRECT
    from tests.smart_helpers import FhirReader, token_for

    token = token_for(sandbox.url, "P03-pt", TEST_READER, TEST_READER_REDIRECT)
    task = FhirReader(f"{sandbox.url}/fhir", token["access_token"]).search("Task?patient=P03-pt")
    assert len(task) == 1
    assert task[0]["status"] == "completed"
    assert task[0]["output"][0]["valueString"].startswith("Example Bridge Clinic")
    assert "bedside" in task[0]["note"][0]["text"]

    db = handoff.app.extensions["handoff"].db
    with db.session() as session:
        types = [
            e.type for e in session.scalars(select(LogEvent).where(LogEvent.patient_id == "P03-pt"))
        ]
    assert {"coach-accept", "coach-contact", "coach-link"} <= set(types)


def test_worklist_roles(handoff):
    assert as_staff(handoff.app, None).get("/worklist/").status_code == 302  # sign in first
    auditor = {"sub": "a", "name": "A", "user_ref": "urn:staff:a", "roles": ["auditor"]}
    client = as_staff(handoff.app, auditor)
    assert client.get("/worklist/").status_code == 403
    assert post(client, "/worklist/x/accept").status_code == 403  # an auditor cannot write
    physician_browser = handoff.app.test_client()
    with physician_browser.session_transaction() as session:
        session["browser_id"] = "a-physician-launch"
    assert physician_browser.get("/worklist/").status_code == 302
