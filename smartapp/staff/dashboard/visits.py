"""Referral-log events joined into visits, the unit every dashboard figure counts.

Pure: events are dicts (`seq, at, type, iss, patient_id, encounter_id, data`; `at` a datetime
or an ISO-8601 string). A *visit* is one (iss, patient, encounter) for which at least one
suggestion was shown; it belongs to the ISO week in which suggestions were first shown for it,
and its decision and coach events count with it whenever they happened. The patient key kept on
a visit is used only to count distinct patients; it never leaves the dashboard package.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from smartapp.engine import kinds

COACH_KIND = kinds.PRC_CONSULT
LINKED_REASON = "Linked to a program"

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
    contact_at: datetime | None = None
    linked: bool = False
    program: str | None = None

    @property
    def coach_referral(self) -> bool:
        return any(kind == COACH_KIND and accepted for kind, accepted, _ in self.decisions)

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

    def coach(self, event: dict, kind: str, data: dict, at: datetime) -> None:
        visit = self.by_referral.get(str(data.get("referral"))) or self.visits.get(_key(event))
        if visit is None:
            return
        if kind == "coach-contact" and (visit.contact_at is None or at < visit.contact_at):
            visit.contact_at = at
        elif kind == "coach-link" or (
            kind == "coach-close" and data.get("reason") == LINKED_REASON
        ):
            visit.linked = True
            visit.program = (data.get("program") or "").strip() or visit.program


def build_visits(events: Iterable[dict]) -> list[Visit]:
    """Join the events of each visit: shown suggestions, the decision, the coach's actions."""
    joiner = _Joiner()
    for event in sorted(events, key=lambda e: (as_utc(e["at"]), e.get("seq") or 0)):
        joiner.add(event)
    return list(joiner.visits.values())
