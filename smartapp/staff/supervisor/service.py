"""The supervisor view's data and its one action, without Flask: read Handoff's store and the
referral log, compute the figures (`figures`, pure), and reassign a handoff through the
lifecycle (`smartapp.handoffs.service.record`, with the supervisor as the Actor) after the
caseload cap allows it (`smartapp.staff.caseload.check_accept`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import CoachHandoff, Database, FollowupContact, Referral
from smartapp.handoffs import current, followup, lifecycle
from smartapp.handoffs import service as handoffs
from smartapp.handoffs.lifecycle import LifecycleError
from smartapp.staff import caseload
from smartapp.staff.supervisor import figures, holdings, signings
from smartapp.writeback.actor import Actor

if TYPE_CHECKING:
    from smartapp.catalog import Catalog

#: Handoffs whose follow-up no longer runs.
DROPPED = ("cancelled", "rejected")
#: Days of caseload history the page shows.
HISTORY_DAYS = 14


@dataclass(frozen=True)
class Queued:
    """A handoff waiting in the team queue, with what the supervisor needs to place it."""

    referral_id: str
    patient_name: str
    signed_at: datetime
    minutes: int
    mode: str
    after_hours: bool


@dataclass(frozen=True)
class Held:
    """An open handoff a coach holds (for reassignment)."""

    referral_id: str
    patient_name: str
    coach_name: str
    status: str


@dataclass(frozen=True)
class Overdue:
    """A follow-up contact past its due time, on an open handoff."""

    referral_id: str
    patient_name: str
    day: int
    due_at: datetime
    coach_name: str | None
    hours_late: int


@dataclass
class SupervisorPage:
    """Everything the supervisor page shows."""

    cap: int
    loads: list[caseload.Load]
    days: list[date]
    series: list[figures.CoachSeries]
    queue: list[Queued]
    held: list[Held]
    overdue: list[Overdue]
    after_hours: list[figures.Signed]
    coverage: figures.Coverage
    coaches: list[caseload.Coach]
    coverage_hours: list[str]
    coverage_problem: str | None
    unreadable: int
    timezone: str

    def local(self, moment: datetime) -> str:
        """A time as the program's clock shows it (`Mon 11-16 21:05`)."""
        return moment.astimezone(ZoneInfo(self.timezone)).strftime("%a %m-%d %H:%M")


def caseload_series(
    session: Session, days: list[date], zone: ZoneInfo, now: datetime
) -> list[figures.CoachSeries]:
    """Each coach's caseload on each of `days`, from the holdings open on any of them
    (`holdings`), as `figures.caseload_over_time` makes it from the log's events."""
    first = datetime.combine(days[0], time.min, tzinfo=zone)
    events = holdings.changes(holdings.overlapping(session, first))
    series = figures.caseload_over_time(events, days, zone, now)
    nameless = [s.ref for s in series if s.name == s.ref]
    names = holdings.latest_names(session, nameless)
    return [replace(s, name=names.get(s.ref, s.name)) for s in series]


_NAME = Referral.decision[("shown", "patient", "name")].as_string()
_MODE = Referral.decision["consult_mode"].as_string()


def _patient_names(db: Database, referral_ids: set[str]) -> dict[str, tuple[str, str]]:
    """Referral id -> (patient name as shown at Sign, consult mode): two values picked out
    of each decision by the database, not every decision and write plan parsed here."""
    if not referral_ids:
        return {}
    out = {}
    query = select(Referral.id, Referral.patient_id, _NAME, _MODE)
    with db.session() as session:
        for ids in followup.in_batches(referral_ids):
            for referral_id, patient_id, name, mode in session.execute(
                query.where(Referral.id.in_(ids))
            ):
                out[referral_id] = (name or patient_id, mode or "in-person")
    return out


def overdue_followups(
    db: Database,
    config: Mapping[str, Any],
    now: datetime,
    signed: Mapping[str, datetime] | None = None,
) -> list[Overdue]:
    """Follow-up contacts past overdue (`smartapp.handoffs.followup`: due + FOLLOWUP_OVERDUE_
    HOURS) and not made, on handoffs not cancelled or rejected, most late first. The handoffs
    signed lately (`signed`, as `current.handoffs_signed` reads them unless given) are planned
    first (idempotent), so none is left out; the late contacts are then one query along the
    contacts' due time, not every plan read."""
    settings = followup.FollowupSettings.from_config(config)
    if signed is None:
        with db.session() as session:
            signed = current.handoffs_signed(session, current.horizon(now, settings))
    followup.ensure_planned(db, signed, settings)
    cutoff = (now - settings.overdue_after).astimezone(UTC)
    query = (
        select(
            FollowupContact.referral_id,
            FollowupContact.day,
            FollowupContact.due_at,
            CoachHandoff.coach_name,
        )
        .outerjoin(CoachHandoff, CoachHandoff.referral_id == FollowupContact.referral_id)
        .where(
            FollowupContact.done_at.is_(None),
            FollowupContact.due_at <= cutoff,
            or_(CoachHandoff.status.is_(None), CoachHandoff.status.not_in(DROPPED)),
        )
    )
    with db.session() as session:
        late = session.execute(query).all()
    names = _patient_names(db, {row.referral_id for row in late})  # those late only
    overdue = [
        Overdue(
            referral_id=row.referral_id,
            patient_name=names.get(row.referral_id, (row.referral_id, ""))[0],
            day=row.day,
            due_at=caseload.aware(row.due_at),
            coach_name=row.coach_name,
            hours_late=int((now - caseload.aware(row.due_at)).total_seconds() // 3600),
        )
        for row in late
    ]
    return sorted(overdue, key=lambda o: (o.due_at, o.referral_id))


def held_handoffs(db: Database) -> list[Held]:
    """Open handoffs held by a coach (accepted or in progress), by coach then patient."""
    with db.session() as session:
        rows = session.scalars(
            select(CoachHandoff).where(CoachHandoff.status.in_(caseload.COUNTED))
        ).all()
        found = [
            (r.referral_id, r.coach_name or "?", r.status)
            for r in rows
            if getattr(r, "owner_kind", None) in (None, "coach")
        ]
    names = _patient_names(db, {referral for referral, *_ in found})
    held = [
        Held(referral, names.get(referral, (referral, ""))[0], coach, status)
        for referral, coach, status in found
    ]
    return sorted(held, key=lambda h: (h.coach_name.casefold(), h.patient_name.casefold()))


def supervisor_page(
    db: Database,
    config: Mapping[str, Any],
    catalog: Catalog | None,
    now: datetime,
    viewer: str | None = None,
) -> SupervisorPage:
    """The supervisor page at `now` (the read is logged as `viewer`'s, when given)."""
    settings = caseload.Settings.from_config(config, catalog)
    zone = ZoneInfo(settings.timezone)
    days = figures.period_days(now.astimezone(zone).date(), HISTORY_DAYS)
    first = datetime.combine(days[0], time.min, tzinfo=zone)
    unreadable = holdings.bring_up_to_date(db)
    since = current.horizon(now, followup.FollowupSettings.from_config(config))
    with db.session() as session:  # the days shown only: never the whole log
        events = list(signings.events(session, first))  # those the figures count, not all
        series = caseload_series(session, days, zone, now)
        handed = current.handoffs_signed(session, since)  # for the queue and the follow-ups
        waiting = caseload.waiting(session, handed, now)
    signed = figures.signed_handoffs(events, lambda at: caseload.in_coverage(settings, at))
    recent = [row for row in signed if row.signed_at.astimezone(zone).date() >= days[0]]
    names = _patient_names(db, {w.referral_id for w in waiting})
    loads = caseload.loads(db, settings, now)
    queue = [
        Queued(
            referral_id=w.referral_id,
            patient_name=names.get(w.referral_id, (w.referral_id, ""))[0],
            signed_at=w.signed_at,
            minutes=w.minutes,
            mode=names.get(w.referral_id, ("", "in-person"))[1],
            after_hours=not caseload.in_coverage(settings, w.signed_at),
        )
        for w in waiting
    ]
    page = SupervisorPage(
        cap=settings.cap,
        loads=loads,
        days=days,
        series=series,
        queue=queue,
        held=held_handoffs(db),
        overdue=overdue_followups(db, config, now, handed),
        after_hours=[row for row in recent if row.after_hours],
        coverage=figures.coverage(recent, now),
        coaches=reassign_targets(db, settings, now),
        coverage_hours=_lines(config.get("COACH_COVERAGE_HOURS", caseload.DEFAULT_COVERAGE_HOURS)),
        coverage_problem=settings.coverage_problem,
        unreadable=unreadable,
        timezone=settings.timezone,
    )
    if viewer:
        with db.session() as session:
            referral_log.record_read(
                session, viewer, "supervisor view (caseload, queue, follow-ups)"
            )
    return page


def _lines(hours: Any) -> list[str]:
    """The coverage hours setting as lines (a string holds them apart by ";")."""
    if isinstance(hours, str):
        return [line.strip() for line in hours.split(";") if line.strip()]
    return [str(line) for line in hours or ()]


def reassign_targets(
    db: Database, settings: caseload.Settings, now: datetime
) -> list[caseload.Coach]:
    """The coaches a handoff can go to: on shift, holding handoffs, or on the roster."""
    found = {load.coach.ref: load.coach for load in caseload.loads(db, settings, now)}
    for coach in settings.roster:
        found.setdefault(coach.ref, coach)
    return sorted(found.values(), key=lambda c: (c.name.casefold(), c.ref))


def reassign(
    db: Database,
    config: Mapping[str, Any],
    referral_id: str,
    to_ref: str,
    supervisor: Mapping[str, Any],
    note: str | None = None,
    now: datetime | None = None,
) -> lifecycle.HandoffState:
    """Hand `referral_id` to the coach `to_ref` (one of `reassign_targets`) as `supervisor`
    (staff dict: name, user_ref); LifecycleError (CaseloadFull at the cap) says why not."""
    settings = caseload.Settings.from_config(config)
    targets = {c.ref: c for c in reassign_targets(db, settings, now or datetime.now(UTC))}
    target = targets.get(to_ref)
    if target is None:
        raise LifecycleError("Pick a coach from the list.")
    boss = Actor("supervisor", str(supervisor["name"]), str(supervisor["user_ref"]))
    caseload.check_accept(db, target, settings, referral_id, by=boss)
    to = Actor("coach", target.name, target.ref)
    return handoffs.record(db, referral_id, lifecycle.reassign(to, note), boss, now=now)
