"""Follow-up after the ED visit: gentle but persistent outreach over days and weeks.

Each handoff gets a plan of contacts at FOLLOWUP_DAYS after the visit (default 1, 3, 7 and 30
days; the spec names the default, a program sets its own), each due at the visit's time plus
that many days and overdue FOLLOWUP_OVERDUE_HOURS later. A coach records each attempt
(reached / no answer / declined, with a note where the result needs one: the lifecycle's
NOTE_REQUIRED) and the outcome at FOLLOWUP_OUTCOME_DAYS (7, 30 and 90): reached, in
treatment, attending the program, declined, lost to contact. Attempts log
`followup-attempt`, outcomes `followup-outcome`. Flask-free; the clock is always given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import Database, FollowupContact, FollowupOutcome, Referral
from smartapp.handoffs import lifecycle, service
from smartapp.handoffs.lifecycle import CONTACT_WORDS, NOTE_REQUIRED, Change, LifecycleError
from smartapp.writeback.actor import Actor

OUTCOMES = {
    "reached": "Reached",
    "in-treatment": "In treatment",
    "attending": "Attending the program",
    "declined": "Declined",
    "lost": "Lost to contact",
}
# An outcome at 30 days that says the patient is in care steps the Task to engaged-30-days.
ENGAGED = ("in-treatment", "attending")
# Who may record follow-up: the handoff's coach, or a supervisor.
MAY_RECORD = ("coach", "supervisor")


@dataclass(frozen=True)
class FollowupSettings:
    """The plan's days, when a contact counts as overdue, and the outcome days."""

    days: tuple[int, ...] = (1, 3, 7, 30)
    overdue_after: timedelta = timedelta(hours=24)
    outcome_days: tuple[int, ...] = (7, 30, 90)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FollowupSettings:
        """From the app's settings (FOLLOWUP_DAYS, FOLLOWUP_OVERDUE_HOURS,
        FOLLOWUP_OUTCOME_DAYS); lists from the environment's JSON work too."""
        return cls(
            days=_days(config.get("FOLLOWUP_DAYS", cls.days)),
            overdue_after=timedelta(hours=float(config.get("FOLLOWUP_OVERDUE_HOURS", 24))),
            outcome_days=_days(config.get("FOLLOWUP_OUTCOME_DAYS", cls.outcome_days)),
        )


def _days(value: Iterable[Any]) -> tuple[int, ...]:
    days = sorted({int(d) for d in value})
    if not days or days[0] < 0:
        raise ValueError(f"follow-up days must be whole days after the visit, not {value!r}")
    return tuple(days)


@dataclass(frozen=True)
class Contact:
    """One planned contact and, once made, how it went."""

    day: int
    due_at: datetime
    done_at: datetime | None = None
    result: str | None = None
    note: str | None = None
    by_name: str | None = None

    def state(self, now: datetime, overdue_after: timedelta) -> str:
        """done, overdue, due or upcoming."""
        if self.done_at is not None:
            return "done"
        due = _aware(self.due_at, now)
        if now >= due + overdue_after:
            return "overdue"
        return "due" if now >= due else "upcoming"


@dataclass(frozen=True)
class Outcome:
    day: int
    outcome: str
    recorded_at: datetime
    by_name: str | None = None
    note: str | None = None

    @property
    def words(self) -> str:
        return OUTCOMES.get(self.outcome, self.outcome)


@dataclass(frozen=True)
class Plan:
    """A handoff's follow-up: its planned contacts and the outcomes recorded so far."""

    referral_id: str
    visit_at: datetime
    contacts: tuple[Contact, ...] = ()
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def next_contact(self) -> Contact | None:
        return next((c for c in self.contacts if c.done_at is None), None)

    def state(self, now: datetime, settings: FollowupSettings) -> str:
        """The most pressing state of the plan: overdue, due, upcoming or done."""
        states = {c.state(now, settings.overdue_after) for c in self.contacts}
        return next((s for s in ("overdue", "due", "upcoming") if s in states), "done")

    def outcomes_due(self, now: datetime, settings: FollowupSettings) -> list[int]:
        """The outcome days reached with no outcome recorded yet."""
        visit = _aware(self.visit_at, now)
        return [
            day
            for day in settings.outcome_days
            if day not in self.outcomes and now >= visit + timedelta(days=day)
        ]


def _aware(value: datetime, like: datetime) -> datetime:
    """SQLite hands back naive datetimes (UTC): give them `like`'s zone to compare."""
    return value if value.tzinfo else value.replace(tzinfo=like.tzinfo)


# -- the plan in the store ------------------------------------------------------------------


def ensure_plans(db: Database, referrals: Iterable[Referral], settings: FollowupSettings) -> None:
    """Plan the contacts of handoffs that have none yet (idempotent: two processes planning
    the same handoff at once leave one plan, the primary key refuses the second)."""
    ensure_planned(db, {r.id: r.created_at for r in referrals}, settings)


def ensure_planned(
    db: Database, wanted: Mapping[str, datetime], settings: FollowupSettings
) -> None:
    """`ensure_plans` for handoffs given as referral id -> signing time."""
    if not wanted:
        return
    planned: set[str] = set()
    with db.session() as session:
        for ids in in_batches(wanted):
            query = select(FollowupContact.referral_id).where(FollowupContact.referral_id.in_(ids))
            planned.update(session.scalars(query))
    for referral_id, visit_at in wanted.items():
        if referral_id in planned:
            continue
        try:
            with db.session() as session:
                session.add_all(plan_rows(referral_id, visit_at, settings))
        except IntegrityError:
            continue  # planned meanwhile by another process


#: A referral's id, signing time and decisions, picked out by the database: enough to tell a
#: handoff (`handoffs_among`) without reading its whole decision and write plan.
SIGNINGS = select(Referral.id, Referral.created_at, Referral.decision["decisions"])


def handoffs_among(rows: Iterable[Any]) -> dict[str, datetime]:
    """Referral id -> signing time, of the rows of `SIGNINGS` that are handoffs."""
    return {rid: at for rid, at, decisions in rows if service.accepts_coach(decisions)}


def plan_every_handoff(db: Database, settings: FollowupSettings) -> int:
    """Plan every handoff with no plan yet, whatever its age (`handoff db upgrade`: the pages
    plan only the handoffs signed lately, `handoffs.current`); the number planned. A batch of
    referrals at a time."""
    planned = exists().where(FollowupContact.referral_id == Referral.id)
    query = SIGNINGS.where(~planned).order_by(Referral.id)
    count, after = 0, ""
    while True:
        with db.session() as session:
            rows = session.execute(query.where(Referral.id > after).limit(IN_BATCH)).all()
        if not rows:
            return count
        after = rows[-1][0]
        wanted = handoffs_among(rows)
        ensure_planned(db, wanted, settings)
        count += len(wanted)


#: Referral ids per IN list: a database takes only so many values in one statement
#: (PostgreSQL's protocol: 65,535), and a health system has more handoffs than that in time.
IN_BATCH = 5000


def in_batches(ids: Iterable[str]) -> Iterator[list[str]]:
    """`ids` in lists of at most IN_BATCH."""
    listed = list(ids)
    for start in range(0, len(listed), IN_BATCH):
        yield listed[start : start + IN_BATCH]


def plan_rows(
    referral_id: str, visit_at: datetime, settings: FollowupSettings
) -> list[FollowupContact]:
    return [
        FollowupContact(referral_id=referral_id, day=day, due_at=visit_at + timedelta(days=day))
        for day in settings.days
    ]


_CONTACTS = select(
    FollowupContact.referral_id,
    FollowupContact.day,
    FollowupContact.due_at,
    FollowupContact.done_at,
    FollowupContact.result,
    FollowupContact.note,
    FollowupContact.by_name,
).order_by(FollowupContact.referral_id, FollowupContact.day)
_OUTCOMES = select(
    FollowupOutcome.referral_id,
    FollowupOutcome.day,
    FollowupOutcome.outcome,
    FollowupOutcome.recorded_at,
    FollowupOutcome.by_name,
    FollowupOutcome.note,
)


def plans(db: Database, referrals: Iterable[Referral]) -> dict[str, Plan]:
    """The follow-up plans of these referrals, by referral id (their rows read as values, not
    ORM objects: a worklist reads the plans of every current handoff on each poll)."""
    visits = {r.id: r.created_at for r in referrals}
    if not visits:
        return {}
    contacts: dict[str, list[Contact]] = {}
    outcomes: list[Any] = []
    with db.session() as session:
        for ids in in_batches(visits):
            query = _CONTACTS.where(FollowupContact.referral_id.in_(ids))
            for referral_id, day, due, done, result, note, by_name in session.execute(query):
                contact = Contact(day, due, done, result, note, by_name)
                contacts.setdefault(referral_id, []).append(contact)
            outcomes.extend(session.execute(_OUTCOMES.where(FollowupOutcome.referral_id.in_(ids))))
    out = {rid: Plan(rid, visit, tuple(contacts.get(rid, ()))) for rid, visit in visits.items()}
    for referral_id, day, outcome, recorded_at, by_name, note in outcomes:
        out[referral_id].outcomes[day] = Outcome(day, outcome, recorded_at, by_name, note)
    return out


# -- recording --------------------------------------------------------------------------------


def _check_actor(session: Session, referral_id: str, actor: Actor) -> Referral:
    """The referral, when `actor` may record its follow-up: its coach, or a supervisor."""
    referral, row = service.load(session, referral_id)
    if actor.kind not in MAY_RECORD:
        raise LifecycleError(f"A {actor.kind} cannot record follow-up.")
    if actor.kind == "coach":
        if not row.coach_ref:
            raise LifecycleError("Accept the handoff first.")
        if row.coach_ref != actor.reference:
            raise LifecycleError(f"This handoff belongs to {row.coach_name}.")
    return referral


def record_attempt(
    db: Database,
    referral_id: str,
    day: int,
    result: str,
    note: str | None,
    actor: Actor,
    now: datetime,
) -> Contact:
    """Record the attempt of the contact planned at `day`; log `followup-attempt`."""
    if result not in lifecycle.CONTACT_RESULTS:
        raise LifecycleError("Say how the attempt went: reached, no answer or declined.")
    text = lifecycle.clean(note, 1000)
    if NOTE_REQUIRED[result] and not text:
        raise LifecycleError(
            f"A note is needed when the patient was {CONTACT_WORDS[result].lower()}: "
            "say what was agreed or why not."
        )
    with db.session() as session:
        referral = _check_actor(session, referral_id, actor)
        row = session.get(FollowupContact, (referral_id, day))
        if row is None:
            raise LifecycleError(f"No follow-up contact is planned at day {day}.")
        if row.done_at is not None:
            raise LifecycleError(f"The day {day} contact was recorded already.")
        row.done_at, row.result, row.note = now, result, text
        row.by_ref, row.by_name = actor.reference, actor.display
        referral_log.append_by(
            session,
            "followup-attempt",
            referral,
            actor,
            {"referral": referral_id, "day": day, "result": result, "note": text},
        )
        return Contact(day, row.due_at, now, result, text, actor.display)


def record_outcome(
    db: Database,
    referral_id: str,
    day: int,
    outcome: str,
    note: str | None,
    actor: Actor,
    now: datetime,
    settings: FollowupSettings,
) -> Outcome:
    """Record the outcome at `day` (once the day is reached); log `followup-outcome`. At 30
    days, "in treatment" or "attending the program" steps the Task to engaged-30-days."""
    if day not in settings.outcome_days:
        days = ", ".join(str(d) for d in settings.outcome_days)
        raise LifecycleError(f"Outcomes are recorded at {days} days, not {day}.")
    if outcome not in OUTCOMES:
        raise LifecycleError("Pick the outcome: " + ", ".join(OUTCOMES.values()).lower() + ".")
    text = lifecycle.clean(note, 1000)
    with db.session() as session:
        referral = _check_actor(session, referral_id, actor)
        opens = _aware(referral.created_at, now) + timedelta(days=day)
        if now < opens:
            raise LifecycleError(
                f"The {day}-day outcome can be recorded from {opens:%Y-%m-%d %H:%M} UTC."
            )
        row = session.get(FollowupOutcome, (referral_id, day))
        if row is None:
            row = FollowupOutcome(referral_id=referral_id, day=day)
            session.add(row)
        row.outcome, row.note, row.recorded_at = outcome, text, now
        row.by_ref, row.by_name = actor.reference, actor.display
        referral_log.append_by(
            session,
            "followup-outcome",
            referral,
            actor,
            {"referral": referral_id, "day": day, "outcome": outcome, "note": text},
        )
        if day == 30 and outcome in ENGAGED:
            _step_engaged(session, referral_id, actor, now)
        return Outcome(day, outcome, now, actor.display, text)


def _step_engaged(session: Session, referral_id: str, actor: Actor, now: datetime) -> None:
    """Step the Task to engaged-30-days where the lifecycle allows it (not for a handoff
    cancelled or rejected, nor past that step already)."""
    change = Change("update", business_status="engaged-30-days")
    state = service.state_of(service.load(session, referral_id)[1], referral_id)
    try:
        lifecycle.apply(state, change, actor, now)
    except LifecycleError:
        return
    service.record_in(session, referral_id, change, actor, now=now)
