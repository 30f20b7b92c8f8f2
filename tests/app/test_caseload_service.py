"""The coach caseload as a service, with no server: open caseload against the cap, the refusal
at the cap, who is on shift, the team queue and what the physician is told (SQLite in a
temporary folder, the sample catalog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smartapp.catalog import load_catalog
from smartapp.config import Defaults
from smartapp.db import CoachHandoff, Database, Referral, StaffSession
from smartapp.staff import caseload
from smartapp.staff.caseload import CaseloadFull, Settings
from smartapp.writeback.actor import Actor

pytestmark = pytest.mark.unit

# A Wednesday, 15:00 UTC = 10:00 in New York (inside the default coverage hours).
NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
JORDAN = {"user_ref": "urn:staff:coach-1", "name": "Jordan Rivera, CPRS"}
SAM = {"user_ref": "urn:staff:coach-2", "name": "Sam Lee, CPRS"}
CAP2 = {"COACH_CASELOAD_CAP": 2}


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.create_all()
    return database


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(Defaults.CATALOG_DIR)


def handoff(
    db: Database,
    rid: str,
    status: str = "requested",
    coach: dict | None = None,
    signed: datetime = NOW,
    consult: bool = True,
) -> None:
    """A signed referral (with or without an accepted coach consult) and its coach row."""
    with db.session() as session:
        session.add(
            Referral(
                id=rid,
                visit_key=f"v-{rid}",
                context_id=f"c-{rid}",
                iss="http://ehr.test/fhir",
                patient_id=f"p-{rid}",
                decision={"decisions": [{"kind": "prc-consult", "accepted": consult}]},
                plan={"operations": []},
                created_at=signed,
            )
        )
        row = CoachHandoff(referral_id=rid, status=status)
        if coach:
            row.coach_ref, row.coach_name = coach["user_ref"], coach["name"]
        session.add(row)


def signed_in(db: Database, staff: dict, seen: datetime = NOW, roles=("coach",)) -> None:
    with db.session() as session:
        session.add(
            StaffSession(
                id=f"s-{staff['user_ref']}-{seen.isoformat()}",
                sub=staff["user_ref"],
                name=staff["name"],
                user_ref=staff["user_ref"],
                roles=list(roles),
                created_at=seen,
                last_seen_at=seen,
            )
        )


def test_open_caseload_counts_accepted_and_in_progress_only(db):
    handoff(db, "a", "accepted", JORDAN)
    handoff(db, "b", "in-progress", JORDAN)
    handoff(db, "c", "completed", JORDAN)
    handoff(db, "d", "cancelled", JORDAN)
    handoff(db, "e", "requested")
    handoff(db, "f", "accepted", SAM)
    assert caseload.open_counts(db) == {
        JORDAN["user_ref"]: (JORDAN["name"], 2),
        SAM["user_ref"]: (SAM["name"], 1),
    }
    shown = {load.coach.name: (load.open, load.at_cap) for load in caseload.loads(db, CAP2, NOW)}
    assert shown == {JORDAN["name"]: (2, True), SAM["name"]: (1, False)}


def test_check_accept_refuses_at_the_cap_and_says_why(db):
    handoff(db, "a", "accepted", JORDAN)
    caseload.check_accept(db, JORDAN, CAP2)  # one below the cap: allowed
    handoff(db, "b", "in-progress", JORDAN)
    with pytest.raises(CaseloadFull, match=r"You have 2 open handoffs, the caseload cap \(2\)"):
        caseload.check_accept(db, JORDAN, CAP2)
    # The same coach as an Actor (the lifecycle service's form) is refused the same way.
    actor = Actor(kind="coach", display=JORDAN["name"], reference=JORDAN["user_ref"])
    with pytest.raises(CaseloadFull):
        caseload.check_accept(db, actor, CAP2)
    # A reassignment to a full coach names them to whoever reassigns.
    boss = Actor(kind="supervisor", display="Casey Supervisor", reference="urn:staff:sup-1")
    with pytest.raises(CaseloadFull, match=r"Jordan Rivera, CPRS has 2 open handoffs"):
        caseload.check_accept(db, JORDAN, CAP2, "x", by=boss)
    # A handoff the coach holds already adds nothing; another coach is free.
    caseload.check_accept(db, JORDAN, CAP2, "a")
    caseload.check_accept(db, SAM, CAP2)
    # The default cap (8) when the setting is absent.
    caseload.check_accept(db, JORDAN, {})
    assert Settings.from_config({}).cap == caseload.DEFAULT_CAP == Defaults.COACH_CASELOAD_CAP


def test_on_shift_is_recent_coach_sessions_and_the_roster_in_coverage_hours(db):
    signed_in(db, JORDAN, NOW - timedelta(minutes=10))
    signed_in(db, SAM, NOW - timedelta(minutes=90))  # idle past the window: off shift
    signed_in(db, {"user_ref": "urn:staff:pm", "name": "PM"}, NOW, roles=("program-manager",))
    assert [c.name for c in caseload.on_shift(db, {}, NOW)] == [JORDAN["name"]]
    roster = {"COACH_ROSTER": [{"user_ref": "urn:staff:oncall", "name": "On Call"}]}
    assert [c.name for c in caseload.on_shift(db, roster, NOW)] == [JORDAN["name"], "On Call"]
    night = datetime(2026, 11, 19, 4, 0, tzinfo=UTC)  # 23:00 in New York: outside coverage
    signed_in(db, SAM, night)
    assert [c.name for c in caseload.on_shift(db, roster, night)] == [SAM["name"]]


def test_coverage_hours(db):
    windows = caseload.coverage_windows(
        ["mon-fri 08:00-18:00", "sat 09:00-24:00", "sun-mon 01:00-02:00"]
    )
    assert windows[0].days == (0, 1, 2, 3, 4) and windows[1].end is None
    assert windows[2].days == (6, 0)
    assert caseload.coverage_windows("mon-fri 08:00-18:00; sat 09:00-13:00")[1].days == (5,)
    config = {"COACH_COVERAGE_HOURS": ["mon-fri 08:00-18:00"], "COACH_COVERAGE_TIMEZONE": "UTC"}
    assert caseload.in_coverage(config, NOW)
    assert not caseload.in_coverage(config, NOW.replace(hour=19))
    assert not caseload.in_coverage(config, datetime(2026, 11, 21, 10, 0, tzinfo=UTC))  # Sat
    for bad in ("weekdays 8-6", "mon-fri 18:00-08:00", "xyz 08:00-09:00"):
        with pytest.raises(ValueError, match="COACH_COVERAGE_HOURS"):
            caseload.coverage_windows([bad])


def test_expectation_available_queued_at_cap_and_nobody_on_shift(db, catalog):
    nobody = caseload.expectation(db, CAP2, catalog, NOW)
    assert (nobody.kind, nobody.reason) == ("queued", "none-on-shift")
    assert nobody.text == (
        "No coach is on shift now: the handoff will wait in the team queue; "
        "warm line (555) 555-0142."
    )
    assert nobody.warm_line_name == "Example Peer Recovery Warmline"

    signed_in(db, JORDAN, NOW - timedelta(minutes=5))
    free = caseload.expectation(db, CAP2, catalog, NOW)
    assert (free.kind, free.text, free.available) == ("available", "A coach is available now.", 1)

    handoff(db, "a", "accepted", JORDAN)
    handoff(db, "b", "in-progress", JORDAN)
    full = caseload.expectation(db, CAP2, catalog, NOW)
    assert (full.kind, full.reason, full.on_shift, full.available) == ("queued", "at-cap", 1, 0)
    assert full.text.startswith("All coaches on shift are at their caseload: the handoff will")
    assert full.as_dict()["warm_line"] == {
        "name": "Example Peer Recovery Warmline",
        "phone": "(555) 555-0142",
    }
    # A busy coach who is off shift does not make anyone available.
    signed_in(db, SAM, NOW - timedelta(minutes=3))
    assert caseload.expectation(db, CAP2, catalog, NOW).kind == "available"


def test_warm_line_from_the_setting_and_none_without_a_catalog(db, catalog):
    settings = Settings.from_config({"COACH_WARM_LINE_PROGRAM": "bridge-telehealth"}, catalog)
    program = caseload.warm_line(catalog, settings, NOW)
    assert program is not None and program.id == "bridge-telehealth"
    told = caseload.expectation(db, {}, None, NOW)
    assert told.text == "No coach is on shift now: the handoff will wait in the team queue."
    assert told.warm_line_phone is None


def test_team_queue_is_unaccepted_handoffs_with_how_long_they_wait(db):
    handoff(db, "old", signed=NOW - timedelta(minutes=95))
    handoff(db, "new", signed=NOW - timedelta(minutes=5))
    handoff(db, "taken", "accepted", JORDAN)
    handoff(db, "declined", consult=False)
    queue = caseload.team_queue(db, NOW)
    assert [(w.referral_id, w.minutes) for w in queue] == [("old", 95), ("new", 5)]
