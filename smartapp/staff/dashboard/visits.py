"""Referral-log events joined into visits, the unit every dashboard figure counts.

Pure: events are dicts (`seq, at, type, iss, patient_id, encounter_id, data`; `at` a datetime
or an ISO-8601 string). A *visit* is one (iss, patient, encounter) for which at least one
suggestion was shown; it belongs to the ISO week in which suggestions were first shown for it,
and its decision and coach events count with it whenever they happened. The patient key kept on
a visit is used only to count distinct patients; it never leaves the dashboard package.

The handoff's lifecycle events (issue 11) join the visit by their referral: `handoff-status`
(a business status step, or a partner's change of the Task), `followup-attempt`,
`followup-outcome` and `consent-recorded`. A step reported later carries the time it happened
in its data (`at`); that time is used, else the event's own. The outcome definitions are in
`smartapp.staff.dashboard.outcomes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from smartapp.engine import kinds
from smartapp.handoffs.lifecycle import BUSINESS_STEPS

COACH_KIND = kinds.PRC_CONSULT
LINKED_REASON = "Linked to a program"

# The handoff's business statuses as the lifecycle logs them, in order (a later step implies
# the earlier ones were reached). Index + 1 is the step's rank; 0: no step reported.
STEPS = BUSINESS_STEPS
CONTACTED, SCHEDULED, ATTENDED, ENGAGED = range(1, len(STEPS) + 1)
# A Task status that, reported for a handoff, confirms the link (the partner or coach closed the
# loop). A partner accepting a referral is not a link: the program only agreed to take it.
CONFIRMING_TASK_STATUSES = ("completed",)
PARTNER = "partner"  # the `actor_kind` of a community partner's update
# A follow-up at this day with one of these outcomes means "engaged at 30 days".
ENGAGED_DAY = 30
ENGAGED_OUTCOMES = ("in-treatment", "attending")
REACHED = "reached"  # a follow-up attempt that reached the patient is a contact
LIFECYCLE_TYPES = ("handoff-status", "followup-attempt", "followup-outcome", "consent-recorded")

PatientKey = tuple[str | None, str | None]
VisitKey = tuple[str | None, str | None, str | None]


@dataclass
class Visit:
    """What the log says about one visit (holds the patient key, for counting only)."""

    patient: PatientKey
    first_shown: datetime
    arrival: datetime | None = None
    demographics: dict[str, str | None] = field(default_factory=dict)
    kinds: dict[str, str | None] = field(default_factory=dict)  # kind -> rule
    rules: set[str] = field(default_factory=set)
    decided_at: datetime | None = None
    decisions: list[tuple[str, bool, str | None]] = field(default_factory=list)
    contact_at: datetime | None = None  # the first `coach-contact`
    coach_linked: bool = False  # `coach-link`, or `coach-close` "Linked to a program"
    program: str | None = None  # what the coach linked to (catalog pick or typed)
    program_id: str | None = None  # the catalog id of the coach's pick, where logged
    # The handoff's lifecycle (issue 11): see `smartapp.staff.dashboard.outcomes`.
    followed: bool = False  # a lifecycle event names this visit's referral
    first_contact_at: datetime | None = None  # by the coach, the program, or a follow-up
    scheduled_at: datetime | None = None  # when the first appointment was scheduled
    attended_at: datetime | None = None  # when the first appointment was attended
    step: int = 0  # the furthest business status reported (rank in STEPS)
    partner_confirmed: bool = False  # a partner reported a confirming step
    staff_confirmed: bool = False  # a coach (or other Handoff staff) reported one
    engaged_followup: bool = False  # a day-30 follow-up found the patient in treatment
    reported_program: str | None = None  # the program a lifecycle update named
    consent_program: str | None = None  # the program the patient consented to share with
    partner: str | None = None  # the partner an update or the consent named

    @property
    def coach_referral(self) -> bool:
        return any(kind == COACH_KIND and accepted for kind, accepted, _ in self.decisions)

    @property
    def handoff(self) -> bool:
        """A coach referral, or a referral the lifecycle followed (a partner's, say)."""
        return self.coach_referral or self.followed

    @property
    def linked_by(self) -> str | None:
        """Who confirmed the link: "partner" (also when the coach did), "coach", or None."""
        if self.partner_confirmed:
            return PARTNER
        if self.coach_linked or self.staff_confirmed:
            return "coach"
        return None

    @property
    def linked(self) -> bool:
        return self.linked_by is not None

    @property
    def attended(self) -> bool:
        return self.step >= ATTENDED

    @property
    def engaged(self) -> bool:
        return self.step >= ENGAGED or self.engaged_followup

    @property
    def program_entries(self) -> tuple[str, ...]:
        """What names the program the visit was linked to, most telling first: a lifecycle
        update's program, the coach's pick (catalog id, then as logged), the consent's."""
        found = (self.reported_program, self.program_id, self.program, self.consent_program)
        return tuple(text for text in found if text)

    @property
    def week(self) -> str:
        return iso_week(self.first_shown)

    @property
    def accepted(self) -> int:
        """How many of the decision's items were accepted."""
        return sum(1 for _, ok, _ in self.decisions if ok)


# -- times ------------------------------------------------------------------------------------


def as_utc(value: datetime | str) -> datetime:
    """A log time (datetime, naive = UTC as SQLite returns it, or ISO string) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def arrival_time(text: Any) -> datetime | None:
    """A FHIR dateTime with a time of day as UTC; None for dates alone, absent or malformed."""
    if not isinstance(text, str) or len(text) <= 10:
        return None
    try:
        return as_utc(text)
    except ValueError:
        return None


def iso_week(moment: datetime) -> str:
    """ "2024-W18": the ISO year and week of a moment (UTC)."""
    year, week, _ = as_utc(moment).isocalendar()
    return f"{year}-W{week:02d}"


def week_monday(week: str) -> date:
    """The Monday of an ISO week label."""
    year, number = week.split("-W")
    return date.fromisocalendar(int(year), int(number), 1)


def weeks_between(first: str, last: str) -> list[str]:
    """Every ISO week label from `first` to `last`, inclusive, so a chart has no missing weeks."""
    out, day, end = [], week_monday(first), week_monday(last)
    while day <= end:
        out.append(iso_week(datetime(day.year, day.month, day.day, tzinfo=UTC)))
        day += timedelta(days=7)
    return out


# -- events to visits -------------------------------------------------------------------------


def _key(event: dict) -> VisitKey:
    return (event.get("iss"), event.get("patient_id"), event.get("encounter_id"))


class _Joiner:
    """Joins events, in time order, into visits: one handler per event type."""

    def __init__(self) -> None:
        self.visits: dict[VisitKey, Visit] = {}
        self.by_referral: dict[str, Visit] = {}

    def add(self, event: dict) -> None:
        kind, data, at = event["type"], event.get("data") or {}, as_utc(event["at"])
        if kind == "suggestions-shown":
            self.shown(event, data, at)
        elif kind == "decision":
            self.decision(event, data, at)
        elif kind.startswith("coach-"):
            self.coach(event, kind, data, at)
        elif kind in LIFECYCLE_TYPES:
            visit = self.of_referral(event, data)
            if visit is not None:
                visit.followed = True
                self.lifecycle(visit, kind, data, at)

    def shown(self, event: dict, data: dict, at: datetime) -> None:
        if not data.get("suggestions"):
            return  # the rules suggested nothing: not a visit with suggestions
        visit = self.visits.get(_key(event))
        if visit is None:
            visit = self.visits[_key(event)] = Visit(
                patient=(event.get("iss"), event.get("patient_id")), first_shown=at
            )
        for suggestion in data.get("suggestions") or []:
            visit.kinds[suggestion.get("kind")] = suggestion.get("rule")
            if suggestion.get("rule"):
                visit.rules.add(suggestion["rule"])
        for name, value in (data.get("demographics") or {}).items():
            if value:
                visit.demographics[name] = str(value)
        visit.arrival = arrival_time(data.get("encounter_start")) or visit.arrival

    def decision(self, event: dict, data: dict, at: datetime) -> None:
        visit = self.visits.get(_key(event))
        if visit is None or visit.decided_at is not None:
            return  # nothing shown for it in this log, or signed already
        visit.decided_at = at
        visit.decisions = [
            (d.get("kind"), bool(d.get("accepted")), d.get("reason"))
            for d in data.get("decisions") or []
        ]
        if visit.arrival is None:
            shown = data.get("shown") or {}
            visit.arrival = arrival_time((shown.get("encounter") or {}).get("start"))
        if data.get("referral"):
            self.by_referral[str(data["referral"])] = visit

    def of_referral(self, event: dict, data: dict) -> Visit | None:
        """The visit an event about a referral belongs to (by referral, else by encounter)."""
        return self.by_referral.get(str(data.get("referral"))) or self.visits.get(_key(event))

    def coach(self, event: dict, kind: str, data: dict, at: datetime) -> None:
        visit = self.of_referral(event, data)
        if visit is None:
            return
        if kind == "coach-contact":
            visit.contact_at = earliest(visit.contact_at, at)
            visit.first_contact_at = earliest(visit.first_contact_at, at)
        elif kind == "coach-link" or (
            kind == "coach-close" and data.get("reason") == LINKED_REASON
        ):
            visit.coach_linked = True
            visit.program = (data.get("program") or "").strip() or visit.program
            visit.program_id = _text(data.get("program_id")) or visit.program_id

    def lifecycle(self, visit: Visit, kind: str, data: dict, at: datetime) -> None:
        """A lifecycle event: a status step, a follow-up, or the consent to share."""
        if kind == "handoff-status":
            status_step(visit, data, at)
        elif kind == "followup-attempt" and data.get("result") == REACHED:
            visit.first_contact_at = earliest(visit.first_contact_at, reported_at(data, at))
        elif kind == "followup-outcome":
            visit.engaged_followup |= (
                str(data.get("day")) == str(ENGAGED_DAY) and data.get("outcome") in ENGAGED_OUTCOMES
            )
        elif kind == "consent-recorded":
            visit.consent_program = _text(data.get("program")) or visit.consent_program
            visit.partner = visit.partner or _text(data.get("partner"))


def _text(value: Any) -> str | None:
    """A data value as stripped text; None when empty or absent."""
    if value is None:
        return None
    return str(value).strip() or None


def earliest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    """The earlier of two times, either possibly unknown."""
    if candidate is None:
        return current
    return candidate if current is None or candidate < current else current


def reported_at(data: dict, at: datetime) -> datetime | None:
    """When a step happened: the `at` in the event's data where it was reported later (with a
    time of day, else unknown), else the event's time."""
    if data.get("at") in (None, ""):
        return at
    return arrival_time(data["at"])


def status_step(visit: Visit, data: dict, at: datetime) -> None:
    """A `handoff-status` event: the step reached, its time, who confirmed the link, and the
    program and partner it names."""
    step = STEPS.index(data["business_status"]) + 1 if data.get("business_status") in STEPS else 0
    when = reported_at(data, at)
    if step == CONTACTED:
        visit.first_contact_at = earliest(visit.first_contact_at, when)
    elif step == SCHEDULED:
        visit.scheduled_at = earliest(visit.scheduled_at, when)
    elif step == ATTENDED:
        visit.attended_at = earliest(visit.attended_at, when)
    # A step confirms the link for whoever advanced to it; an event repeating the handoff's
    # current step (a partner accepting a referral the coach already scheduled) does not.
    advanced = step > visit.step
    visit.step = max(visit.step, step)
    if (advanced and step >= SCHEDULED) or data.get("task_status") in CONFIRMING_TASK_STATUSES:
        if data.get("actor_kind") == PARTNER:
            visit.partner_confirmed = True
        else:
            visit.staff_confirmed = True
    visit.reported_program = _text(data.get("program")) or visit.reported_program
    visit.partner = _text(data.get("partner")) or visit.partner


def build_visits(events: Iterable[dict]) -> list[Visit]:
    """Join the events of each visit: shown suggestions, the decision, the coach's actions."""
    joiner = _Joiner()
    for event in sorted(events, key=lambda e: (as_utc(e["at"]), e.get("seq") or 0)):
        joiner.add(event)
    return list(joiner.visits.values())
