"""The coach worklist as a service, with no server: status transitions, who may do what, and
the Task update it asks the outbox to queue (SQLite in a temporary folder)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from smartapp.db import CoachHandoff, Database, LogEvent, utcnow
from smartapp.handoffs import lifecycle, service
from smartapp.handoffs.lifecycle import HandoffState
from smartapp.staff import worklist
from smartapp.staff.worklist import WorklistError, program_label
from smartapp.writeback import outbox, profiles
from smartapp.writeback.plan import Method, Mode, Status, WritePlan
from smartapp.writeback.resources import ItemDecision, plan_writes
from tests.unit.referrals import SETTINGS, referral

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
COACH = {"user_ref": "urn:staff:coach-1", "name": "Jordan Rivera, CPRS"}
OTHER = {"user_ref": "urn:staff:coach-2", "name": "Sam Lee, CPRS"}


def test_task_changes_mirror_the_state_and_name_who_acted():
    after = HandoffState(
        "r1", "in-progress", owner_ref=COACH["user_ref"], contact_note="called", updated_at=NOW
    )
    actor = worklist.coach_actor(COACH)
    changes = service.task_changes(after, actor, lifecycle.contact("reached", "called"))
    assert (changes.status, changes.owner_ref, changes.contact_note, changes.modified_at) == (
        "in-progress",
        COACH["user_ref"],
        "called",
        NOW,
    )
    assert getattr(changes, "actor", actor) == actor  # once TaskChanges carries the actor


def test_program_label_names_a_catalog_program_or_takes_the_typed_one():
    class Catalog:
        def label(self, program_id: str) -> str | None:  # as smartapp.catalog.Catalog's
            return "Example Bridge Clinic (555-0100)" if program_id == "bridge-clinic" else None

    catalog = Catalog()
    assert program_label(catalog, "bridge-clinic", "x") == "Example Bridge Clinic (555-0100)"
    assert program_label(catalog, " unknown ", None) == "unknown"
    assert program_label(catalog, "", "  Typed program ") == "Typed program"
    assert program_label(None, "bridge-clinic", None) == "bridge-clinic"
    assert program_label(catalog, None, "  ") is None


# -- act: the state, the log and the queued Task update in one go -----------------------------


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.create_all()
    return database


def signed(db: Database, profile: str, task_written: bool, patient: str = "p1") -> str:
    plan: WritePlan = plan_writes(referral(patient_id=patient), SETTINGS, profiles.profile(profile))
    task = plan.task_create()
    assert task is not None
    if task_written:
        for op in plan.operations:
            if op.mode is Mode.REST:
                op.mark_written(f"{op.type.lower()}-1", "201 Created")
    decision = {
        "decisions": [{"kind": "prc-consult", "accepted": True}],
        "consult_mode": "telehealth",
    }
    row, created = outbox.submit(
        db,
        visit_key=f"visit-{patient}",
        context_id="ctx",
        iss="http://ehr.test/fhir",
        patient_id=patient,
        encounter_id="e1",
        user_ref="Practitioner/doc",
        decision=decision,
        plan=plan,
    )
    assert created
    if task_written:  # as after a delivery
        with db.session() as session:
            session.get(type(row), row.id).status = "written"
    return row.id


def test_act_on_a_task_at_the_ehr_queues_a_put_and_logs(db):
    referral_id = signed(db, "fhir-rest", task_written=True)
    state = worklist.act(db, referral_id, "accept", COACH)
    assert state.status == "accepted"
    row = outbox.get(db, referral_id)
    assert row is not None and row.status == "queued"  # the outbox has a write to deliver
    plan = outbox.plan_of(row)
    [update] = [op for op in plan.operations if op.method is Method.UPDATE]
    assert (update.status, update.id) == (Status.PENDING, "task-1")
    assert update.resource["status"] == "accepted"
    with db.session() as session:
        events = [e.type for e in session.scalars(select(LogEvent).order_by(LogEvent.seq))]
    assert events[-1] == "coach-accept"
    worklist.act(db, referral_id, "contact", COACH, note="hello", result="reached")
    plan = outbox.plan_of(outbox.get(db, referral_id))
    updates = [op for op in plan.operations if op.method is Method.UPDATE]
    assert [u.resource["status"] for u in updates] == ["accepted", "in-progress"]


def test_act_on_a_task_kept_in_handoff_changes_the_kept_copy(db):
    referral_id = signed(db, "epic", task_written=False)
    before = outbox.get(db, referral_id)
    assert before is not None
    worklist.act(db, referral_id, "accept", COACH)
    row = outbox.get(db, referral_id)
    assert row is not None and row.status == before.status  # nothing new for the EHR
    plan = outbox.plan_of(row)
    assert len(plan.operations) == len(outbox.plan_of(before).operations)
    task = plan.task_create()
    assert task is not None and task.mode is Mode.LOCAL and task.resource["status"] == "accepted"


def test_a_refused_action_changes_nothing(db):
    referral_id = signed(db, "fhir-rest", task_written=True)
    before = outbox.get(db, referral_id)
    assert before is not None
    with pytest.raises(WorklistError, match="Accept the handoff first"):
        worklist.act(db, referral_id, "contact", COACH, note="x", result="reached")
    with db.session() as session:
        assert session.get(CoachHandoff, referral_id) is None
    after = outbox.get(db, referral_id)
    assert after is not None and (after.plan, after.status) == (before.plan, "written")
    with pytest.raises(WorklistError, match="No such handoff"):
        worklist.act(db, "nope", "accept", COACH)


def test_items_and_loads(db):
    first = signed(db, "fhir-rest", task_written=True, patient="p1")
    second = signed(db, "epic", task_written=False, patient="p2")
    worklist.act(db, first, "accept", COACH)
    worklist.act(db, second, "close", OTHER, reason="Patient declined the coach")
    open_items = worklist.items(db, utcnow())
    assert [(i.referral_id, i.status, i.mode) for i in open_items] == [
        (first, "accepted", "telehealth")
    ]
    assert {i.referral_id for i in worklist.items(db, utcnow(), include_closed=True)} == {
        first,
        second,
    }
    assert worklist.loads(db) == {COACH["name"]: 1}


def test_a_declined_consult_is_no_handoff(db):
    plan = plan_writes(
        referral([ItemDecision("prc-consult", False, "Patient declined")]),
        SETTINGS,
        profiles.profile("fhir-rest"),
    )
    row, _ = outbox.submit(
        db,
        visit_key="v",
        context_id="c",
        iss="i",
        patient_id="p",
        encounter_id=None,
        user_ref=None,
        decision={"decisions": [{"kind": "prc-consult", "accepted": False}]},
        plan=plan,
    )
    assert worklist.items(db, utcnow(), include_closed=True) == []
    with pytest.raises(WorklistError, match="No such handoff"):
        worklist.act(db, row.id, "accept", COACH)


def test_accept_and_reassign_past_the_caseload_cap_are_refused(db):
    first = signed(db, "fhir-rest", task_written=True, patient="p1")
    second = signed(db, "fhir-rest", task_written=True, patient="p2")
    config = {"COACH_CASELOAD_CAP": 1}
    worklist.act(db, first, "accept", COACH, config=config)
    with pytest.raises(WorklistError, match="caseload cap"):
        worklist.act(db, second, "accept", COACH, config=config)
    with db.session() as session:
        assert session.get(CoachHandoff, second) is None  # still in the team queue
    worklist.act(db, second, "accept", OTHER, config=config)
    with pytest.raises(WorklistError, match="Sam Lee, CPRS has 1 open handoff"):
        worklist.reassign(db, first, COACH, worklist.coach_actor(OTHER), config)
    assert worklist.loads(db) == {COACH["name"]: 1, OTHER["name"]: 1}


def test_closed_handoffs_leave_the_list_after_their_last_outcome_day(db):
    from datetime import timedelta

    from smartapp.handoffs.followup import FollowupSettings

    old = signed(db, "fhir-rest", task_written=True, patient="p1")
    waiting = signed(db, "fhir-rest", task_written=True, patient="p2")
    worklist.act(db, old, "accept", COACH)
    worklist.act(db, old, "close", COACH, reason="Could not reach the patient")
    settings = FollowupSettings(days=(1,), outcome_days=(7,))
    soon, late = utcnow() + timedelta(days=8), utcnow() + timedelta(days=40)
    assert [i.referral_id for i in worklist.items(db, soon, settings)] == [old, waiting]
    assert [i.referral_id for i in worklist.items(db, late, settings)] == [waiting]  # unowned: open
    everything = worklist.items(db, late, settings, include_closed=True)
    assert [i.referral_id for i in everything] == [old, waiting]


def test_the_list_reads_coach_rows_across_in_lists(db, monkeypatch):
    """The coach rows of the handoffs listed go to the database in lists of IN_BATCH ids
    (PostgreSQL takes at most 65,535 values in one statement; "Show closed" lists every
    handoff): each handoff still shows its own row's status."""
    from smartapp.handoffs import followup

    monkeypatch.setattr(followup, "IN_BATCH", 2)
    ids = [signed(db, "fhir-rest", task_written=True, patient=f"p{n}") for n in range(5)]
    for referral_id in ids[::2]:
        worklist.act(db, referral_id, "accept", COACH)
    found = {i.referral_id: i.status for i in worklist.items(db, utcnow(), include_closed=True)}
    assert found == {rid: "accepted" if n % 2 == 0 else "requested" for n, rid in enumerate(ids)}
