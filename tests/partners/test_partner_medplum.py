"""The partner's update path against the Medplum peer (`fhir-rest`): a referral written to
Medplum, a coach (signed in to Handoff) accepts, records contact and the patient's consent to
share, and the partner's own system (its ES384 client assertion) fetches its Task from Handoff's
partner API, reports the first appointment attended and completes it. The outbox writes the
changes to Medplum: the Task `completed` (attended) in one version per change, the
ServiceRequest `completed`, a Provenance per change naming the coach, then the partner
Organization, with Handoff as the assembler Device.

Medplum here has no authorization server, so the outbox's client is a plain FHIR client on
it (as in tests/app/test_lifecycle_writes.py); the partner's side is the real one over HTTP.
"""

from __future__ import annotations

import requests

from smartapp.db import CoachHandoff, Database
from smartapp.web.serving import reserve_port
from tests.app.test_lifecycle_writes import (
    author,
    business_code,
    change_provenances,
    deliver_until_written,
    history,
    ids_of,
    medplum_get,
    medplum_referral,
    medplum_search,
)
from tests.conftest import start_app, write_registration
from tests.partners.conftest import COACH
from tests.partners.helpers import PartnerClient, new_key
from tests.staff_login import STAFF_KEY, staff_session_token

CSRF = "t" * 43
PARTNER_ORG = "Organization/example-bridge-health"


def test_a_partner_update_lands_at_medplum(tmp_path, medplum):
    port = reserve_port()
    app_url = f"http://127.0.0.1:{port}"
    launch_dir = write_registration(tmp_path / "launch", medplum.base_url, client_id="handoff")
    partner = PartnerClient(
        app_url,
        "bridge-health",
        "bridge-health-system",
        PARTNER_ORG,
        [new_key("bridge-medplum-1")],
        programs=["bridge-clinic"],
    )
    partner.write_file(launch_dir / "partners")
    database_url = f"sqlite:///{tmp_path / 'handoff.sqlite'}"
    app = start_app(tmp_path / "app", port, launch_dir, DATABASE_URL=database_url)
    try:
        # P27: a visit no other test writes at the Medplum peer (it outlives each test)
        db, referral_id, client = medplum_referral(tmp_path, medplum, "P27-pt")
        coach_accepts_contacts_and_records_consent(app, referral_id)
        deliver_until_written(db, referral_id, client)

        token = partner.token()
        found = partner.get(
            f"Task?owner={PARTNER_ORG}&_include=Task:focus&_include=Task:patient", token
        ).json()
        kinds = sorted(e["resource"]["resourceType"] for e in found["entry"])
        assert kinds == ["Patient", "ServiceRequest", "Task"]
        task = next(e["resource"] for e in found["entry"] if e["resource"]["id"] == referral_id)
        attended = dict(task, businessStatus={"coding": [{"code": "appointment-attended"}]})
        answer = partner.put(f"Task/{referral_id}", attended, task["meta"]["versionId"], token)
        assert answer.status_code == 200, answer.text
        completed = dict(answer.json(), status="completed")
        version = answer.headers["ETag"].removeprefix('W/"').removesuffix('"')
        answer = partner.put(f"Task/{referral_id}", completed, version, token)
        assert answer.status_code == 200, answer.text
        row = deliver_until_written(db, referral_id, client)
    finally:
        app.stop()

    with Database(database_url).session() as session:
        state = session.get(CoachHandoff, referral_id)
        assert (state.status, state.business_status) == ("completed", "appointment-attended")
    ids = ids_of(row)
    steps = [
        (v["status"], business_code(v)) for v in history(medplum_get(medplum), "Task", ids["Task"])
    ]
    assert steps == [
        ("requested", None),
        ("accepted", None),
        ("in-progress", "contacted"),
        ("in-progress", "appointment-attended"),
        ("completed", "appointment-attended"),
    ]
    order = requests.get(medplum.url(f"ServiceRequest/{ids['ServiceRequest']}"), timeout=10)
    assert order.json()["status"] == "completed"
    authors = [author(p) for p in change_provenances(medplum_search(medplum), row)]
    assert [a["display"] for a in authors] == [COACH["name"]] * 2 + ["Bridge Health"] * 2
    assert {a.get("reference") for a in authors[2:]} == {PARTNER_ORG}


def coach_accepts_contacts_and_records_consent(app, referral_id: str) -> None:
    """The worklist's and the consent form's posts, as a signed-in coach."""
    coach = app.app.test_client()
    with coach.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(app.app, COACH)
        session["csrf"] = CSRF
    for path, form in (
        (f"/worklist/{referral_id}/accept", {}),
        (f"/worklist/{referral_id}/contact", {"result": "reached", "note": "Met at bedside"}),
        (
            f"/staff/handoffs/{referral_id}/consent",
            {"partner": "bridge-health", "purpose": "TREAT"},
        ),
    ):
        answer = coach.post(path, data={"csrf_token": CSRF, **form})
        assert answer.status_code == 302, (path, answer.get_data(as_text=True)[:300])
