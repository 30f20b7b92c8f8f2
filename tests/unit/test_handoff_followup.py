"""Follow-up after the ED with a controlled clock (no server; SQLite in a temporary folder):
the plan at FOLLOWUP_DAYS, due and overdue, attempts and outcomes recorded and logged, who may
record them; the record service's log events naming who acted; the coach's contact details."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from smartapp.audit import coverage
from smartapp.db import Database, LogEvent, Referral
from smartapp.handoffs import followup, lifecycle, service
from smartapp.handoffs.contact import contact_details, location_of, phone_of
from smartapp.handoffs.followup import FollowupSettings
from smartapp.handoffs.lifecycle import Change, LifecycleError
from smartapp.staff import worklist
from smartapp.writeback import outbox
from smartapp.writeback.actor import Actor
from tests.unit.test_worklist_service import COACH, OTHER, signed

pytestmark = pytest.mark.unit

SETTINGS = FollowupSettings()
JORDAN = Actor("coach", COACH["name"], COACH["user_ref"])
SAM = Actor("coach", OTHER["name"], OTHER["user_ref"])


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.create_all()
    return database


def visit(db: Database, referral_id: str):
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        assert referral is not None
        return referral


def events(db: Database, type_: str) -> list[LogEvent]:
    with db.session() as session:
        return list(session.scalars(select(LogEvent).where(LogEvent.type == type_)))


def test_settings_from_config_take_lists_and_refuse_nonsense():
    settings = FollowupSettings.from_config(
        {"FOLLOWUP_DAYS": [2, 1, 14], "FOLLOWUP_OVERDUE_HOURS": 12}
    )
    assert settings.days == (1, 2, 14)
    assert settings.overdue_after == timedelta(hours=12)
    assert settings.outcome_days == (7, 30, 90)
    with pytest.raises(ValueError, match="whole days"):
        FollowupSettings.from_config({"FOLLOWUP_DAYS": []})


def test_the_plan_falls_due_and_overdue_as_the_clock_moves(db):
    referral_id = signed(db, "fhir-rest", task_written=True)
    referral = visit(db, referral_id)
    signed_at = referral.created_at
    followup.ensure_plans(db, [referral], SETTINGS)
    followup.ensure_plans(db, [referral], SETTINGS)  # idempotent
    plan = followup.plans(db, [referral])[referral_id]
    assert [c.day for c in plan.contacts] == [1, 3, 7, 30]

    def state_at(hours: float) -> tuple[str, list[str]]:
        now = signed_at + timedelta(hours=hours)
        current = followup.plans(db, [referral])[referral_id]
        states = [c.state(now, SETTINGS.overdue_after) for c in current.contacts]
        return current.state(now, SETTINGS), states

    assert state_at(1) == ("upcoming", ["upcoming"] * 4)
    assert state_at(25) == ("due", ["due", "upcoming", "upcoming", "upcoming"])
    assert state_at(49) == ("overdue", ["overdue", "upcoming", "upcoming", "upcoming"])
    assert state_at(24 * 3 + 1) == ("overdue", ["overdue", "due", "upcoming", "upcoming"])

    worklist.act(db, referral_id, "accept", COACH)
    now = signed_at + timedelta(days=3, hours=1)
    followup.record_attempt(db, referral_id, 1, "no-answer", None, JORDAN, now)
    assert state_at(24 * 3 + 1) == ("due", ["done", "due", "upcoming", "upcoming"])
    followup.record_attempt(db, referral_id, 3, "reached", "Has a visit Monday", JORDAN, now)
    assert state_at(24 * 3 + 2) == ("upcoming", ["done", "done", "upcoming", "upcoming"])
    [first, second] = events(db, "followup-attempt")
    assert (first.user_ref, first.data["user_name"]) == (COACH["user_ref"], COACH["name"])
    assert {k: first.data[k] for k in ("referral", "day", "result", "actor_kind")} == {
        "referral": referral_id,
        "day": 1,
        "result": "no-answer",
        "actor_kind": "coach",
    }
    assert (second.data["day"], second.data["note"]) == (3, "Has a visit Monday")


def test_attempt_rules_say_why(db):
    referral_id = signed(db, "fhir-rest", task_written=True)
    referral = visit(db, referral_id)
    followup.ensure_plans(db, [referral], SETTINGS)
    now = referral.created_at + timedelta(days=2)
    with pytest.raises(LifecycleError, match="Accept the handoff first"):
        followup.record_attempt(db, referral_id, 1, "no-answer", None, JORDAN, now)
    worklist.act(db, referral_id, "accept", COACH)
    refusals = [
        ((1, "no-answer", None, SAM), "belongs to Jordan Rivera"),
        ((1, "reached", "  ", JORDAN), "A note is needed when the patient was reached"),
        ((1, "declined", None, JORDAN), "A note is needed when the patient was declined"),
        ((1, "maybe", "x", JORDAN), "Say how the attempt went"),
        ((2, "no-answer", None, JORDAN), "No follow-up contact is planned at day 2"),
        ((1, "no-answer", None, Actor("partner", "P", "Organization/p")), "cannot record"),
    ]
    for (day, result, note, actor), message in refusals:
        with pytest.raises(LifecycleError, match=message):
            followup.record_attempt(db, referral_id, day, result, note, actor, now)
    assert events(db, "followup-attempt") == []  # nothing refused was logged
    followup.record_attempt(db, referral_id, 1, "no-answer", None, JORDAN, now)
    with pytest.raises(LifecycleError, match="recorded already"):
        followup.record_attempt(db, referral_id, 1, "no-answer", None, JORDAN, now)
    supervisor = Actor("supervisor", "Casey Morgan", "urn:staff:sup")
    followup.record_attempt(db, referral_id, 3, "no-answer", None, supervisor, now)


def test_outcomes_open_at_their_day_and_engagement_steps_the_task(db):
    referral_id = signed(db, "fhir-rest", task_written=True)
    referral = visit(db, referral_id)
    followup.ensure_plans(db, [referral], SETTINGS)
    worklist.act(db, referral_id, "accept", COACH)
    worklist.act(db, referral_id, "contact", COACH, note="At bedside", result="reached")
    day = referral.created_at + timedelta(days=1)
    plan = followup.plans(db, [referral])[referral_id]
    assert plan.outcomes_due(day, SETTINGS) == []
    with pytest.raises(LifecycleError, match="7-day outcome can be recorded from"):
        followup.record_outcome(db, referral_id, 7, "reached", None, JORDAN, day, SETTINGS)
    with pytest.raises(LifecycleError, match="at 7, 30, 90 days, not 14"):
        followup.record_outcome(db, referral_id, 14, "reached", None, JORDAN, day, SETTINGS)
    month = referral.created_at + timedelta(days=31)
    assert plan.outcomes_due(month, SETTINGS) == [7, 30]
    with pytest.raises(LifecycleError, match="Pick the outcome"):
        followup.record_outcome(db, referral_id, 7, "happy", None, JORDAN, month, SETTINGS)
    followup.record_outcome(db, referral_id, 7, "reached", None, JORDAN, month, SETTINGS)
    followup.record_outcome(
        db, referral_id, 30, "attending", "Goes weekly", JORDAN, month, SETTINGS
    )
    plan = followup.plans(db, [referral])[referral_id]
    assert {d: o.outcome for d, o in plan.outcomes.items()} == {7: "reached", 30: "attending"}
    assert plan.outcomes_due(month, SETTINGS) == []
    logged = events(db, "followup-outcome")
    assert [(e.data["day"], e.data["outcome"], e.user_ref) for e in logged] == [
        (7, "reached", COACH["user_ref"]),
        (30, "attending", COACH["user_ref"]),
    ]
    assert service.get(db, referral_id).business_status == "engaged-30-days"
    [step] = [
        e for e in events(db, "handoff-status") if e.data["business_status"] == "engaged-30-days"
    ]
    assert step.data["actor_kind"] == "coach"
    row = outbox.get(db, referral_id)
    assert row is not None
    task = outbox.plan_of(row).latest(outbox.plan_of(row).task_create())  # type: ignore[arg-type]
    assert task.resource["businessStatus"]["coding"][0]["code"] == "engaged-30-days"


def test_record_names_who_acted_in_the_log_and_refuses_without_a_trace(db):
    referral_id = signed(db, "fhir-rest", task_written=True)
    partner = Actor("partner", "Example Bridge Clinic", "Organization/bridge")
    service.record(db, referral_id, lifecycle.accept(), JORDAN)
    service.record(
        db,
        referral_id,
        Change("update", business_status="appointment-scheduled", partner="bridge"),
        partner,
    )
    supervisor = Actor("supervisor", "Casey Morgan", "urn:staff:sup")
    state = service.record(db, referral_id, lifecycle.reassign(SAM), supervisor)
    assert (state.owner_ref, state.business_status) == (SAM.reference, "appointment-scheduled")
    [status] = events(db, "handoff-status")
    assert (status.user_ref, status.data["partner"], status.data["actor_kind"]) == (
        "Organization/bridge",
        "bridge",
        "partner",
    )
    [moved] = events(db, "handoff-reassign")
    assert {k: moved.data[k] for k in ("from", "to", "actor_kind")} == {
        "from": JORDAN.reference,
        "to": SAM.reference,
        "actor_kind": "supervisor",
    }
    assert moved.user_ref == "urn:staff:sup" and moved.data["user_name"] == "Casey Morgan"
    assigned = signed(db, "fhir-rest", task_written=True, patient="p2")
    service.record(db, assigned, lifecycle.reassign(JORDAN), supervisor)  # requested -> accepted
    with db.session() as session:  # the log covers every status the handoff table holds
        findings, _ = coverage.check(session)
    assert [f.message for f in findings if "coach" in f.message or "handoff" in f.message] == []
    before = outbox.get(db, referral_id)
    with pytest.raises(LifecycleError, match="belongs to Sam Lee"):
        service.record(db, referral_id, lifecycle.contact("no-answer"), JORDAN)
    after = outbox.get(db, referral_id)
    assert before is not None and after is not None and before.plan == after.plan
    assert len(events(db, "coach-contact")) == 0


def test_contact_details_take_the_mobile_and_the_active_bed():
    patient = {
        "telecom": [
            {"system": "email", "value": "x@example.org"},
            {"system": "phone", "value": "555-0100", "use": "home"},
            {"system": "phone", "value": "555-0199", "use": "old"},
            {"system": "phone", "value": "555-0101", "use": "mobile"},
        ]
    }
    encounter = {
        "location": [
            {"location": {"display": "Triage"}, "status": "completed"},
            {"location": {"display": "ED bed 4"}, "status": "active"},
        ]
    }
    assert contact_details(patient, encounter) == {"phone": "555-0101", "location": "ED bed 4"}
    assert phone_of({}) is None and location_of({"location": [{"location": {}}]}) is None
    ended = {"telecom": [{"system": "phone", "value": "1", "period": {"end": "2020"}}]}
    assert phone_of(ended) is None


def test_plans_of_more_handoffs_than_one_statement_takes(db, monkeypatch):
    """Referral ids go to the database in lists of IN_BATCH (PostgreSQL takes at most 65,535
    values in one statement): planned and read across lists, each plan whole and in order."""
    monkeypatch.setattr(followup, "IN_BATCH", 2)
    referrals = [visit(db, signed(db, "fhir-rest", True, patient=f"p{n}")) for n in range(5)]
    followup.ensure_plans(db, referrals[:3], SETTINGS)
    followup.ensure_plans(db, referrals, SETTINGS)  # the first three are planned already
    found = followup.plans(db, referrals)
    assert sorted(found) == sorted(r.id for r in referrals)
    for plan in found.values():
        assert [c.day for c in plan.contacts] == list(SETTINGS.days)
