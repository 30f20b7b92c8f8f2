"""The dashboard's outcomes from the events the lifecycle services themselves log (issue 11):
a signed referral, the coach's accept and contact through `handoffs.service.record`, the
patient's consent to share with a partner's program (`partners.consent`), the partner's
"scheduled" and "attended" reported later (with when they happened), and the day-30
follow-up through `handoffs.followup`: the figures read them as the contract names them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.db import Database
from smartapp.handoffs import followup, service
from smartapp.handoffs.followup import FollowupSettings
from smartapp.handoffs.lifecycle import Change
from smartapp.partners import consent
from smartapp.partners.registry import Partner
from smartapp.staff.dashboard.outcomes import Directory
from smartapp.staff.dashboard.service import program_dashboard
from smartapp.writeback.actor import Actor
from tests.console import logdata
from tests.unit.test_worklist_service import COACH, signed

ARRIVAL = datetime(2026, 11, 20, 10, tzinfo=UTC)  # the signed referral's encounter start
JORDAN = Actor("coach", COACH["name"], COACH["user_ref"])
BRIDGE = Actor(
    "partner", "Intake desk, Example Bridge Health", "Organization/example-bridge-health"
)
PARTNER = Partner.model_validate(
    {
        "id": "bridge-health",
        "name": "Example Bridge Health",
        "organization": {"reference": "Organization/example-bridge-health"},
        "programs": ["bridge-clinic"],
    }
)
NAMES = Directory(
    programs={"bridge-clinic": "Example Bridge Clinic"},
    partners={"bridge-health": "Example Bridge Health"},
    partner_of={"Example Bridge Clinic": "bridge-health"},
)


@pytest.fixture
def db(tmp_path, monkeypatch) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.create_all()
    return database


def test_the_lifecycle_services_events_make_the_outcomes(db, monkeypatch):
    clock = logdata.Clock(ARRIVAL + timedelta(minutes=10))
    monkeypatch.setattr(chain, "utcnow", clock)
    referral_id = signed(db, "fhir-rest", task_written=True)
    who = dict(iss="http://ehr.test/fhir", patient_id="p1", encounter_id="e1")
    with db.session() as session:  # what the screen logs when it shows and when it signs
        referral_log.append(
            session,
            "suggestions-shown",
            user_ref="Practitioner/doc",
            **who,
            data={
                "encounter_start": "2026-11-20T10:00:00Z",
                "suggestions": [{"kind": "prc-consult", "rule": "prc-consult-sud-adult"}],
            },
        )
    clock.now = ARRIVAL + timedelta(minutes=15)
    with db.session() as session:
        referral_log.append(
            session,
            "decision",
            user_ref="Practitioner/doc",
            **who,
            data={
                "referral": referral_id,
                "decisions": [{"kind": "prc-consult", "accepted": True}],
            },
        )

    def at(minutes: int) -> datetime:
        clock.now = ARRIVAL + timedelta(minutes=minutes)
        return clock.now

    service.record(db, referral_id, Change("accept"), JORDAN, now=at(30))
    contact = Change("contact", result="reached", note="talked in bay 3")
    service.record(db, referral_id, contact, JORDAN, now=at(75))
    program = {"id": "bridge-clinic", "display": "Example Bridge Clinic"}
    consent.record(db, referral_id, PARTNER, "TREAT", JORDAN, program, now=at(90))
    scheduled = Change(
        "update",
        status="accepted",
        business_status="appointment-scheduled",
        partner="bridge-health",
        at=ARRIVAL + timedelta(days=1),
    )
    service.record(db, referral_id, scheduled, BRIDGE, now=at(2 * 1440))
    attended = Change(
        "update",
        status="completed",
        business_status="appointment-attended",
        partner="bridge-health",
        at=ARRIVAL + timedelta(days=3),
    )
    service.record(db, referral_id, attended, BRIDGE, now=at(4 * 1440))
    later = datetime.now(UTC) + timedelta(days=31)  # the day-30 outcome opens 30 days on
    clock.now = later
    followup.record_outcome(
        db, referral_id, 30, "in-treatment", "seen at the clinic", JORDAN, later, FollowupSettings()
    )

    with db.session() as session:
        figures = program_dashboard(
            session, start=None, end=None, min_cell=1, programs=(), names=NAMES
        ).figures
    # One referral at a threshold of 1: summarised (this used to raise in the quartiles).
    assert figures["times"]["referral"]["median"] == figures["times"]["referral"]["p25"] == 15
    outcomes = figures["outcomes"]
    totals = outcomes["totals"]
    assert (totals["handoffs"], totals["contacted"], totals["linked"]) == (1, 1, 1)
    assert (totals["by_partner"], totals["by_coach"]) == (1, 0)
    assert (totals["attended"], totals["engaged"]) == (1, 1)
    times = outcomes["times"]
    assert times["first_contact"]["median"] == 75
    assert times["scheduled"]["median"] == 1440  # when it happened, not when it was reported
    assert times["attended"]["median"] == 3 * 1440
    [partner] = outcomes["partners"]
    assert partner["name"] == "Example Bridge Health"
    assert [p["name"] for p in partner["programs"]] == ["Example Bridge Clinic"]
    out = json.dumps(figures, default=str)
    for secret in (COACH["name"], COACH["user_ref"], BRIDGE.display, "bay 3", "at the clinic"):
        assert secret not in out
