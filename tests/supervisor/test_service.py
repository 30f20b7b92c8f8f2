"""The supervisor view's service on a real store (SQLite in a temporary folder, no server): the
team queue, held handoffs, overdue follow-ups from the follow-up plans, caseload per coach,
after-hours coverage, the read logged; reassignment through the lifecycle, refused past the
cap or to someone not on the list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from smartapp.db import Database, LogEvent, Referral, StaffSession
from smartapp.handoffs import lifecycle
from smartapp.handoffs import service as handoffs
from smartapp.handoffs.lifecycle import LifecycleError
from smartapp.staff.caseload import CaseloadFull
from smartapp.staff.supervisor import service
from smartapp.writeback import outbox, profiles
from smartapp.writeback.actor import Actor
from smartapp.writeback.resources import plan_writes
from tests.unit.referrals import SETTINGS, referral

pytestmark = pytest.mark.unit

JORDAN = Actor("coach", "Jordan Rivera, CPRS", "urn:staff:coach-1")
SAM = {"user_ref": "urn:staff:coach-2", "name": "Sam Lee, CPRS"}
BOSS = {"user_ref": "urn:staff:sup-1", "name": "Casey Morgan, LCSW"}
# No coverage hours: every handoff is signed after hours.
CONFIG = {"COACH_CASELOAD_CAP": 2, "COACH_COVERAGE_HOURS": [], "FOLLOWUP_OVERDUE_HOURS": 24}


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.create_all()
    return database


def signed(db: Database, patient: str, days_ago: float = 0) -> str:
    """A signed handoff (coach consult accepted), its visit `days_ago` days back."""
    plan = plan_writes(referral(patient_id=patient), SETTINGS, profiles.profile("fhir-rest"))
    row, _ = outbox.submit(
        db,
        visit_key=f"visit-{patient}",
        context_id="ctx",
        iss="http://ehr.test/fhir",
        patient_id=patient,
        encounter_id=f"e-{patient}",
        user_ref="Practitioner/doc",
        decision={"decisions": [{"kind": "prc-consult", "accepted": True}]},
        plan=plan,
    )
    with db.session() as session:
        session.get(Referral, row.id).created_at = datetime.now(UTC) - timedelta(days=days_ago)
    return row.id


def on_shift(db: Database, staff: dict) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        session.add(
            StaffSession(
                id=f"s-{staff['user_ref']}",
                sub="x",
                name=staff["name"],
                user_ref=staff["user_ref"],
                roles=["coach"],
                created_at=now,
                last_seen_at=now,
            )
        )


def test_the_page_from_a_known_store(db):
    queued = signed(db, "pq")
    held = signed(db, "ph", days_ago=5)
    dropped = signed(db, "px", days_ago=5)
    handoffs.record(db, held, lifecycle.accept(), JORDAN)
    handoffs.record(db, dropped, lifecycle.close("Patient left before contact"), JORDAN)
    now = datetime.now(UTC)

    page = service.supervisor_page(db, CONFIG, None, now, viewer=BOSS["user_ref"])

    assert [(q.referral_id, q.patient_name, q.after_hours) for q in page.queue] == [
        (queued, "pq", True)
    ]
    assert page.held == [service.Held(held, "ph", "Jordan Rivera, CPRS", "accepted")]
    # The visit was 5 days ago: the day 1 and day 3 contacts are more than 24 h late; the
    # cancelled handoff's plan no longer runs.
    assert [(o.referral_id, o.day, o.coach_name) for o in page.overdue] == [
        (held, 1, "Jordan Rivera, CPRS"),
        (held, 3, "Jordan Rivera, CPRS"),
    ]
    assert 95 <= page.overdue[0].hours_late <= 97
    assert [(c.coach.name, c.open, c.cap, c.on_shift) for c in page.loads] == [
        ("Jordan Rivera, CPRS", 1, 2, False)
    ]
    assert [(s.name, s.counts[-1]) for s in page.series] == [("Jordan Rivera, CPRS", 1)]
    assert (page.coverage.signed, page.coverage.after_hours) == (3, 3)
    assert page.coverage.still_waiting_after_hours == 1
    assert {r.referral_id: r.taken_by for r in page.after_hours} == {
        queued: None,
        held: "Jordan Rivera, CPRS",
        dropped: "closed before a coach took it",
    }
    with db.session() as session:
        read = session.scalars(select(LogEvent).order_by(LogEvent.seq.desc())).first()
    assert (read.type, read.user_ref) == ("audit-read", BOSS["user_ref"])


def test_reassign_goes_through_the_lifecycle_as_the_supervisor(db):
    queued = signed(db, "pq")
    other = signed(db, "po")
    held = signed(db, "ph")
    handoffs.record(db, held, lifecycle.accept(), JORDAN)
    on_shift(db, SAM)

    with pytest.raises(LifecycleError, match="Pick a coach from the list"):
        service.reassign(db, CONFIG, queued, "urn:staff:nobody", BOSS)
    state = service.reassign(db, CONFIG, queued, SAM["user_ref"], BOSS, note="Sam is free")
    assert (state.status, state.owner_name, state.owner_kind) == ("accepted", SAM["name"], "coach")
    with db.session() as session:
        event = session.scalars(select(LogEvent).where(LogEvent.type == "handoff-reassign")).one()
    assert event.user_ref == BOSS["user_ref"]
    assert event.data["actor_kind"] == "supervisor" and event.data["user_name"] == BOSS["name"]
    assert (event.data["to"], event.data["note"]) == (SAM["user_ref"], "Sam is free")

    # Jordan holds one; at a cap of 1 nothing more goes to him, and nothing changes.
    with pytest.raises(CaseloadFull, match=r"Jordan Rivera, CPRS has 1 open handoff"):
        service.reassign(db, CONFIG | {"COACH_CASELOAD_CAP": 1}, other, JORDAN.reference, BOSS)
    assert handoffs.get(db, other).status == "requested"
    # Held handoffs move between coaches too (Sam: 1 of 2 -> 2 of 2).
    moved = service.reassign(db, CONFIG, held, SAM["user_ref"], BOSS)
    assert moved.owner_name == SAM["name"] and moved.status == "accepted"
