"""The loop closed after the physician's launch is over: the physician signs, the launch token
expires (and its refresh is refused), a coach accepts, records contact and the patient's
consent, and the partner's own system (its ES384 assertion) fetches its Task and reports the
first appointment attended. The EHR's Task and ServiceRequest are completed through Handoff's
backend services token, and the Provenances name the coach and the partner organisation."""

from __future__ import annotations

import pytest

from smartapp.db import CoachHandoff, Database
from tests import launch_flow
from tests.backend_stack import BACKEND_CLIENT, end_the_launch, sandbox_tokens, start_backend_stack
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.partners.conftest import COACH
from tests.partners.helpers import PartnerClient, new_key
from tests.smart_helpers import FhirReader, token_for
from tests.staff_login import STAFF_KEY, staff_session_token

CSRF = "t" * 43


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    built, _kid = start_backend_stack(tmp_path_factory.mktemp("after-launch"), shared_dir)
    yield built
    built.stop()


def test_partner_reports_attended_after_the_launch_ended(stack):
    app_url = f"http://127.0.0.1:{stack.app_port}"
    partner = PartnerClient(
        app_url,
        "bridge-health",
        "bridge-health-system",
        "Organization/example-bridge-health",
        [new_key("bridge-1")],
        programs=["bridge-clinic"],
    )
    partner.write_file(stack.launch_dir / "partners")  # read on the next request, no restart

    launch = launch_flow.full(app_url, stack.ehr_url, "P03-pt")
    assert launch_flow.sign_all(launch, app_url).status_code == 200
    end_the_launch(stack)

    coach = stack.app.app.test_client()
    with coach.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(stack.app.app, COACH)
        session["csrf"] = CSRF
    from tests.stacks import referral_of

    referral_id = referral_of(stack.database_url, "P03-pt").id
    for action, form in (
        ("accept", {}),
        ("contact", {"result": "reached", "note": "Agrees to the bridge clinic tomorrow"}),
    ):
        answer = coach.post(f"/worklist/{referral_id}/{action}", data={"csrf_token": CSRF, **form})
        assert answer.status_code == 302
    answer = coach.post(
        f"/staff/handoffs/{referral_id}/consent",
        data={"csrf_token": CSRF, "partner": "bridge-health", "purpose": "TREAT"},
    )
    assert answer.status_code == 302

    token = partner.token()
    found = partner.get(
        f"Task?owner={partner.organization}&_include=Task:focus&_include=Task:patient", token
    ).json()
    task = next(e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "Task")
    assert task["status"] == "in-progress"
    attended = dict(
        task,
        status="completed",
        businessStatus={"coding": [{"code": "appointment-attended"}]},
        output=[{"type": {"text": "Outcome"}, "valueString": "Attended intake"}],
    )
    answer = partner.put(f"Task/{referral_id}", attended, task["meta"]["versionId"], token)
    assert answer.status_code == 200, answer.text

    with Database(stack.database_url).session() as session:
        row = session.get(CoachHandoff, referral_id)
        assert (row.status, row.business_status) == ("completed", "appointment-attended")

    reader_token = token_for(stack.ehr_url, "P03-pt", TEST_READER, TEST_READER_REDIRECT)
    reader = FhirReader(f"{stack.ehr_url}/fhir", reader_token["access_token"])
    (ehr_task,) = reader.search("Task?patient=P03-pt")
    assert ehr_task["status"] == "completed"
    assert [r["status"] for r in reader.search("ServiceRequest?patient=P03-pt")] == ["completed"]
    names = {
        agent.get("who", {}).get("display")
        for p in reader.search(f"Provenance?target=Task/{ehr_task['id']}")
        for agent in p.get("agent", [])
    }
    assert {"Jordan Rivera, CPRS", "Bridge Health"} <= names, names
    # Written with Handoff's backend token at the EHR, the launch being over.
    assert any(client == BACKEND_CLIENT for client, _scope, _token in sandbox_tokens(stack))
