"""The coach team's pages read only the referrals that may still ask something of the team
(`smartapp.handoffs.current`), and give what they gave when they read every referral: the
worklist, the team queue and the supervisor's overdue follow-ups, on a store of referrals of
every kind and age (SQLite, and PostgreSQL where HANDOFF_TEST_POSTGRES_URL is set), against
the former reading of every referral written out here as the reference."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from smartapp.config import Defaults
from smartapp.db import CoachHandoff, Database, FollowupContact, Referral
from smartapp.handoffs import current, followup, service
from smartapp.handoffs.lifecycle import OPEN
from smartapp.staff import caseload, worklist
from smartapp.staff.supervisor import service as supervisor
from tests.pgschema import migrated
from tests.referral_rows import referral_row

NOW = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
SETTINGS = followup.FollowupSettings()
CONFIG = {name: getattr(Defaults, name) for name in dir(Defaults) if name.isupper()}
STATUSES = ("requested", "accepted", "in-progress", "completed", "rejected", "cancelled")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    """A migrated database: a SQLite file, or a fresh schema in HANDOFF_TEST_POSTGRES_URL."""
    with migrated(request.param, tmp_path, "current_handoffs") as database:
        yield database


def store(db: Database, count: int, seed: int) -> dict[str, str]:
    """`count` referrals signed over two years up to NOW: handoffs and declined consults, a
    coach row in any state or none, follow-up contacts made or not; referral id -> kind."""
    rnd = random.Random(seed)
    referrals, rows, contacts, kinds = [], [], [], {}
    for i in range(count):
        signed = NOW - timedelta(days=rnd.uniform(0, 730))
        referral_id = f"ref-{i:04d}"
        accepted = rnd.random() < 0.8
        decision = {
            "decisions": [{"kind": "prc-consult", "accepted": accepted}],
            "consult_mode": rnd.choice(["in-person", "telehealth"]),
            "shown": {"patient": {"name": f"Patient {i}"}},
        }
        referrals.append(referral_row(referral_id, i, signed, decision, {"operations": []}))
        kinds[referral_id] = "handoff" if accepted else "declined"
        old = signed < NOW - timedelta(days=150)  # mostly closed by now, as in a program
        if accepted and rnd.random() < (0.95 if old else 0.7):
            status = rnd.choice(STATUSES[3:] * 5 + STATUSES[:3] if old else STATUSES)
            name = rnd.choice(["Coach One", "Coach Two"])
            rows.append({"referral_id": referral_id, "status": status, "coach_name": name})
        if accepted and rnd.random() < 0.9:  # planned already (the rest: not yet viewed)
            for day in SETTINGS.days:
                due = signed + timedelta(days=day)
                done = due if due < NOW and rnd.random() < 0.7 else None
                contacts.append(
                    {"referral_id": referral_id, "day": day, "due_at": due, "done_at": done}
                )
    with db.engine.begin() as connection:
        connection.execute(insert(Referral), referrals)
        if rows:
            connection.execute(insert(CoachHandoff), rows)
        if contacts:
            connection.execute(insert(FollowupContact), contacts)
    return kinds


def every_referral(db: Database) -> list[Referral]:
    with db.session() as session:
        return list(session.scalars(select(Referral).order_by(Referral.created_at)))


def former_overdue(db: Database) -> list[tuple[str, int]]:
    """The overdue follow-ups as the page found them reading every referral and plan."""
    with db.session() as session:
        rows = {h.referral_id: h for h in session.scalars(select(CoachHandoff))}
    referrals = [
        r
        for r in every_referral(db)
        if service.is_handoff(r)
        and (rows[r.id].status if r.id in rows else "requested") not in supervisor.DROPPED
    ]
    followup.ensure_plans(db, referrals, SETTINGS)
    return sorted(
        (referral_id, contact.day)
        for referral_id, plan in followup.plans(db, referrals).items()
        for contact in plan.contacts
        if contact.state(NOW, SETTINGS.overdue_after) == "overdue"
    )


def former_queue(db: Database) -> list[str]:
    with db.session() as session:
        states = {h.referral_id: h.status for h in session.scalars(select(CoachHandoff))}
    return [
        r.id
        for r in every_referral(db)
        if service.is_handoff(r) and states.get(r.id, "requested") == "requested"
    ]


def test_the_current_referrals_leave_out_only_old_closed_handoffs_and_old_declined_consults(db):
    kinds = store(db, 300, seed=1)
    followup.plan_every_handoff(db, SETTINGS)
    since = current.horizon(NOW, SETTINGS)
    with db.session() as session:
        found = current.referral_ids(session, since)
        states = {h.referral_id: h.status for h in session.scalars(select(CoachHandoff))}
        signed = {r.id: caseload.aware(r.created_at) for r in session.scalars(select(Referral))}
    for referral_id, kind in kinds.items():
        recent = signed[referral_id] >= since
        open_handoff = kind == "handoff" and states.get(referral_id, "requested") in (
            "requested",
            "accepted",
            "in-progress",
        )
        assert (referral_id in found) == (recent or open_handoff), referral_id
    assert len(found) < len(kinds) / 2  # two years of referrals: most are read no more


@pytest.mark.parametrize("seed", [2, 3])
def test_the_pages_give_what_reading_every_referral_gave(db, seed):
    store(db, 250, seed=seed)
    assert followup.plan_every_handoff(db, SETTINGS) > 0  # the handoffs not planned yet
    assert followup.plan_every_handoff(db, SETTINGS) == 0  # once
    overdue = supervisor.overdue_followups(db, CONFIG, NOW)
    assert sorted((o.referral_id, o.day) for o in overdue) == former_overdue(db)
    assert [o.due_at for o in overdue] == sorted(o.due_at for o in overdue)
    with db.session() as session:
        coach = {h.referral_id: h.coach_name for h in session.scalars(select(CoachHandoff))}
    for row in overdue:
        assert row.coach_name == coach.get(row.referral_id)
        assert row.patient_name == f"Patient {int(row.referral_id.split('-')[1])}"
    assert [w.referral_id for w in caseload.team_queue(db, NOW)] == former_queue(db)
    assert [i.referral_id for i in worklist.items(db, NOW, SETTINGS)] == former_worklist(db)


def former_worklist(db: Database) -> list[str]:
    """The open worklist as it was read: every referral but the old ones with a closed coach
    row, then what each item shows (open, or a follow-up or outcome pending)."""
    from smartapp.staff.worklist.items import _followup_pending

    horizon = current.horizon(NOW, SETTINGS)
    with db.session() as session:
        states = {h.referral_id: h.status for h in session.scalars(select(CoachHandoff))}
    closed = ("completed", "rejected", "cancelled")
    return [
        item.referral_id
        for item in worklist.items(db, NOW, SETTINGS, include_closed=True)
        if not (caseload.aware(item.signed_at) < horizon and states.get(item.referral_id) in closed)
        and (item.status in OPEN or _followup_pending(item, NOW, SETTINGS))
    ]


def test_upgrade_plans_the_handoffs_a_page_never_saw(db):
    kinds = store(db, 120, seed=4)
    planned = followup.plan_every_handoff(db, SETTINGS)
    with db.session() as session:
        plans = session.scalar(select(func.count(func.distinct(FollowupContact.referral_id))))
    assert plans == sum(1 for kind in kinds.values() if kind == "handoff")
    assert planned > 0
