"""Each coach's open caseload against a cap, who is on shift, and what the physician should
expect of the coach team before Sign. Flask-free: the worklist, the lifecycle service, the
screen service and the supervisor view call these with Handoff's database and settings.

- A coach's *open caseload*: the handoffs they own that are `accepted` or `in-progress`.
- The cap, `COACH_CASELOAD_CAP` (default 8: the spec is silent; published ED peer recovery
  programs keep a coach's active ED caseload small, a program sets its own figure).
  `check_accept` refuses an accept or a reassignment that would take a coach over it; the
  handoff stays `requested`, unowned, in the *team queue* (`team_queue`).
- *On shift* (kept simple): a coach with a staff session seen within
  `COACH_ON_SHIFT_MINUTES`, plus the coaches of `COACH_ROSTER` while the clock is inside
  `COACH_COVERAGE_HOURS` (the program's staffed hours, in `COACH_COVERAGE_TIMEZONE` or the
  catalog's zone). Signing out takes a coach off shift at once.
- `expectation`: "a coach is available" when some coach on shift is under the cap, else
  "queued to the coach team", with the warm line's number from the catalog. Service
  information for the physician, not a clinical decision.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, bindparam, func, or_, select
from sqlalchemy.orm import Session

from smartapp.catalog.codes import DEFAULT_TIMEZONE
from smartapp.catalog.hours import DAYS, Window, is_open
from smartapp.db import CoachHandoff, Database, StaffSession
from smartapp.handoffs import current
from smartapp.handoffs.followup import FollowupSettings, in_batches
from smartapp.handoffs.lifecycle import LifecycleError

if TYPE_CHECKING:
    from smartapp.catalog import Catalog, Program

log = logging.getLogger("handoff.caseload")
#: The open statuses that count against a coach's caseload (a `requested` handoff is unowned).
COUNTED = ("accepted", "in-progress")
#: Default cap (the spec is silent: a program sets COACH_CASELOAD_CAP).
DEFAULT_CAP = 8
DEFAULT_ON_SHIFT_MINUTES = 60
DEFAULT_COVERAGE_HOURS = ("mon-sun 08:00-20:00",)
#: A catalog program is the warm line when COACH_WARM_LINE_PROGRAM names it, else the first
#: peer-support program whose name says "warm line" (or "warmline").
WARM_LINE_NAME = re.compile(r"warm\s*-?\s*line", re.IGNORECASE)
_WINDOW = re.compile(
    r"(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+(?P<t1>\d\d:\d\d)-(?P<t2>\d\d:\d\d)"
)


class CaseloadFull(LifecycleError):
    """An accept or a reassignment that would take a coach over the caseload cap; the message
    is for the coach (or the supervisor) who tried."""


@dataclass(frozen=True)
class Coach:
    """A coach as the caseload sees them: FHIR/staff reference and display name."""

    ref: str
    name: str


@dataclass(frozen=True)
class Load:
    """One coach's open caseload against the cap."""

    coach: Coach
    open: int
    cap: int
    on_shift: bool

    @property
    def at_cap(self) -> bool:
        return self.open >= self.cap


@dataclass(frozen=True)
class Expectation:
    """What the physician should expect before Sign. `kind`: ``available`` (some coach on
    shift is under the cap) or ``queued`` (all at the cap, or none on shift: the handoff waits
    in the team queue). `text` is the one line the screen shows."""

    kind: Literal["available", "queued"]
    reason: Literal["available", "at-cap", "none-on-shift"]
    text: str
    warm_line_name: str | None = None
    warm_line_phone: str | None = None
    on_shift: int = 0
    available: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For the screen's `shown` (JSON, kept with the launch and the signed decision)."""
        return {
            "kind": self.kind,
            "reason": self.reason,
            "text": self.text,
            "warm_line": (
                {"name": self.warm_line_name, "phone": self.warm_line_phone}
                if self.warm_line_phone
                else None
            ),
            "on_shift": self.on_shift,
            "available": self.available,
        }


@dataclass(frozen=True)
class Settings:
    """The caseload's settings, read once from the app's configuration."""

    cap: int = DEFAULT_CAP
    on_shift_minutes: int = DEFAULT_ON_SHIFT_MINUTES
    roster: tuple[Coach, ...] = ()
    coverage: tuple[Window, ...] = ()
    timezone: str = DEFAULT_TIMEZONE
    zone_set: bool = False
    coverage_problem: str | None = None
    warm_line_program: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], catalog: Catalog | None = None) -> Settings:
        """From the app's settings; the coverage hours' zone is COACH_COVERAGE_TIMEZONE, else
        the catalog's (when given), else the catalog default."""
        zone = config.get("COACH_COVERAGE_TIMEZONE") or (
            catalog.timezone if catalog is not None else DEFAULT_TIMEZONE
        )
        try:
            coverage, problem = (
                coverage_windows(config.get("COACH_COVERAGE_HOURS", DEFAULT_COVERAGE_HOURS) or ()),
                None,
            )
        except ValueError as exc:  # never stop the physician's screen: say it where it matters
            log.error("%s", exc)
            coverage, problem = (), str(exc)
        return cls(
            cap=int(config.get("COACH_CASELOAD_CAP") or DEFAULT_CAP),
            on_shift_minutes=int(config.get("COACH_ON_SHIFT_MINUTES") or DEFAULT_ON_SHIFT_MINUTES),
            roster=tuple(_roster(config.get("COACH_ROSTER") or ())),
            coverage=coverage,
            coverage_problem=problem,
            timezone=zone,
            zone_set=bool(config.get("COACH_COVERAGE_TIMEZONE")),
            warm_line_program=config.get("COACH_WARM_LINE_PROGRAM") or None,
        )

    def for_catalog(self, catalog: Catalog | None) -> Settings:
        """These settings with the catalog's zone where no zone was set."""
        if self.zone_set or catalog is None or catalog.timezone == self.timezone:
            return self
        return replace(self, timezone=catalog.timezone)


def _settings(config: Mapping[str, Any] | Settings, catalog: Catalog | None = None) -> Settings:
    if isinstance(config, Settings):
        return config.for_catalog(catalog)
    return Settings.from_config(config, catalog)


def _roster(entries: Iterable[Any]) -> Iterable[Coach]:
    """COACH_ROSTER entries: {"user_ref": ..., "name": ...} or a bare reference."""
    for entry in entries:
        if isinstance(entry, Mapping):
            ref = str(entry.get("user_ref") or entry.get("ref") or "")
            yield Coach(ref=ref, name=str(entry.get("name") or ref))
        else:
            yield Coach(ref=str(entry), name=str(entry))


def coverage_windows(lines: Iterable[str]) -> tuple[Window, ...]:
    """Weekly windows of lines like ``mon-fri 08:00-18:00`` or ``sat 09:00-13:00`` (an end
    of ``24:00`` runs till midnight). A malformed line raises ValueError naming it."""
    if isinstance(lines, str):  # one setting string: lines apart by ";"
        lines = [line for line in lines.split(";") if line.strip()]
    windows = []
    for line in lines:
        found = _WINDOW.fullmatch(line.strip().lower())
        if not found or found["d1"] not in DAYS or (found["d2"] or "mon") not in DAYS:
            raise ValueError(f"COACH_COVERAGE_HOURS: {line!r} is not like 'mon-fri 08:00-18:00'")
        first = DAYS.index(found["d1"])
        last = DAYS.index(found["d2"]) if found["d2"] else first
        days = (
            tuple(range(first, last + 1))
            if first <= last
            else (*range(first, 7), *range(0, last + 1))
        )
        end = None if found["t2"] == "24:00" else time.fromisoformat(found["t2"])
        start = time.fromisoformat(found["t1"])
        if end is not None and end <= start:
            raise ValueError(f"COACH_COVERAGE_HOURS: {line!r} ends before it starts (split it)")
        windows.append(Window(days=days, start=start, end=end))
    return tuple(windows)


def in_coverage(config: Mapping[str, Any] | Settings, at: datetime) -> bool:
    """Whether `at` falls inside the coach program's coverage hours."""
    settings = _settings(config)
    return is_open(settings.coverage, (), settings.timezone, at)


def _ref_name(coach: Any) -> Coach:
    """A coach given as a staff dict (user_ref, name), an Actor (reference, display) or Coach."""
    if isinstance(coach, Coach):
        return coach
    if isinstance(coach, Mapping):
        return Coach(ref=str(coach.get("user_ref") or ""), name=str(coach.get("name") or ""))
    return Coach(ref=str(coach.reference or ""), name=str(coach.display or ""))


def open_counts(db: Database) -> dict[str, tuple[str, int]]:
    """Coach reference -> (display name, open handoffs: accepted or in progress)."""
    with db.read() as connection:  # a read: no ORM unit of work
        return _open_counts(connection)


# Built once: the physician's screen asks both on every launch (building them was most of
# the time of the screen's caseload read on a small table).
_OPEN_COUNTS = (  # a community partner's handoff is in no coach's caseload
    select(CoachHandoff.coach_ref, CoachHandoff.coach_name, func.count())
    .where(
        CoachHandoff.status.in_(COUNTED),
        or_(CoachHandoff.owner_kind.is_(None), CoachHandoff.owner_kind == "coach"),
    )
    .group_by(CoachHandoff.coach_ref, CoachHandoff.coach_name)
    .order_by(CoachHandoff.coach_ref, CoachHandoff.coach_name.is_(None))
    .order_by(CoachHandoff.coach_name)
)
# Who was seen lately: the three columns `_on_shift` reads, not whole sessions.
_SEEN_SINCE = select(StaffSession.user_ref, StaffSession.name, StaffSession.roles).where(
    StaffSession.last_seen_at >= bindparam("since")
)


def _open_counts(connection: Connection) -> dict[str, tuple[str, int]]:
    """`open_counts`, counted in the database (a row per coach and name), never by loading
    every open handoff: the physician's screen asks on every launch."""
    counts: dict[str, tuple[str, int]] = {}
    for coach_ref, coach_name, held in connection.execute(_OPEN_COUNTS):
        ref = coach_ref or coach_name or "?"
        name, n = counts.get(ref, (coach_name or ref, 0))
        counts[ref] = (name, n + held)
    return counts


def on_shift(
    db: Database, config: Mapping[str, Any] | Settings, now: datetime | None = None
) -> list[Coach]:
    """Coaches on shift at `now`: seen in a staff session lately, and the roster's coaches
    during coverage hours (each once, by reference)."""
    with db.read() as connection:  # a read: no ORM unit of work
        return _on_shift(connection, _settings(config), now or datetime.now(UTC))


def _on_shift(connection: Connection, settings: Settings, now: datetime) -> list[Coach]:
    since = now - timedelta(minutes=settings.on_shift_minutes)
    found: dict[str, Coach] = {}
    for row in connection.execute(_SEEN_SINCE, {"since": since}):
        if "coach" in (row.roles or []):
            found.setdefault(row.user_ref, Coach(ref=row.user_ref, name=row.name))
    if settings.roster and in_coverage(settings, now):
        for coach in settings.roster:
            found.setdefault(coach.ref, coach)
    return sorted(found.values(), key=lambda c: (c.name.casefold(), c.ref))


def loads(
    db: Database, config: Mapping[str, Any] | Settings, now: datetime | None = None
) -> list[Load]:
    """Every coach on shift or carrying open handoffs, with their open caseload and the cap."""
    settings = _settings(config)
    with db.read() as connection:  # both reads on one connection, no ORM session
        counts = _open_counts(connection)
        shift = {c.ref: c for c in _on_shift(connection, settings, now or datetime.now(UTC))}
    refs = set(counts) | set(shift)
    out = [
        Load(
            coach=shift.get(ref) or Coach(ref=ref, name=counts[ref][0]),
            open=counts.get(ref, ("", 0))[1],
            cap=settings.cap,
            on_shift=ref in shift,
        )
        for ref in refs
    ]
    return sorted(out, key=lambda load: (load.coach.name.casefold(), load.coach.ref))


def check_accept(
    db: Database,
    coach: Any,
    config: Mapping[str, Any] | Settings,
    referral_id: str | None = None,
    *,
    by: Any = None,
) -> None:
    """Refuse (CaseloadFull) an accept by `coach`, or a reassignment to `coach` (`by`: who
    reassigns), that would take the coach over the cap. A handoff the coach holds already
    (`referral_id`) adds nothing. `coach`: staff dict, Actor or Coach."""
    settings = _settings(config)
    target = _ref_name(coach)
    if referral_id is not None:
        with db.session() as session:
            row = session.get(CoachHandoff, referral_id)
            if row is not None and row.status in COUNTED and row.coach_ref == target.ref:
                return
    _, held = open_counts(db).get(target.ref, ("", 0))
    if held < settings.cap:
        return
    if by is not None and _ref_name(by).ref != target.ref:
        raise CaseloadFull(
            f"{target.name} has {_handoffs(held)}, the caseload cap ({settings.cap}): "
            "choose another coach, or leave the handoff in the team queue."
        )
    raise CaseloadFull(
        f"You have {_handoffs(held)}, the caseload cap ({settings.cap}): close or hand on "
        "one before accepting another. This handoff stays in the team queue."
    )


def _handoffs(count: int) -> str:
    return f"{count} open handoff{'' if count == 1 else 's'}"


def warm_line(catalog: Catalog | None, settings: Settings, now: datetime) -> Program | None:
    """The catalog's warm line (COACH_WARM_LINE_PROGRAM, else a peer-support program named a
    warm line), when it is open at `now`."""
    if catalog is None:
        return None
    program = None
    if settings.warm_line_program:
        try:
            program = catalog.get(settings.warm_line_program)
        except KeyError:
            program = None
    if program is None:
        program = next(
            (p for p in catalog.programs(service="peer-support") if WARM_LINE_NAME.search(p.name)),
            None,
        )
    if program is None or not program.active or not program.open_now(now):
        return None
    return program


def expectation(
    db: Database,
    config: Mapping[str, Any] | Settings,
    catalog: Catalog | None,
    now: datetime | None = None,
) -> Expectation:
    """What the physician should expect of the coach team if they sign now."""
    now = now or datetime.now(UTC)
    settings = _settings(config, catalog)
    shift = [load for load in loads(db, settings, now) if load.on_shift]
    free = [load for load in shift if not load.at_cap]
    line = warm_line(catalog, settings, now)
    if free:
        return Expectation(
            kind="available",
            reason="available",
            text="A coach is available now.",
            on_shift=len(shift),
            available=len(free),
        )
    why: Literal["at-cap", "none-on-shift"] = "at-cap" if shift else "none-on-shift"
    head = "All coaches on shift are at their caseload" if shift else "No coach is on shift now"
    tail = f"; warm line {line.phone}" if line else ""
    return Expectation(
        kind="queued",
        reason=why,
        text=f"{head}: the handoff will wait in the team queue{tail}.",
        warm_line_name=line.name if line else None,
        warm_line_phone=line.phone if line else None,
        on_shift=len(shift),
    )


@dataclass(frozen=True)
class Waiting:
    """A handoff in the team queue: signed, with a coach consult, accepted by no coach yet."""

    referral_id: str
    signed_at: datetime
    minutes: int


def team_queue(
    db: Database, now: datetime | None = None, since: datetime | None = None
) -> list[Waiting]:
    """Handoffs waiting with no coach (status `requested` or no coach row yet), oldest first.
    Only referrals whose coach consult was accepted at Sign are handoffs. Read among the
    referrals that may still ask something of the team (`handoffs.current`, signed since
    `since`: by default the follow-up's horizon), never every referral kept."""
    now = now or datetime.now(UTC)
    since = since or current.horizon(now, FollowupSettings())
    with db.session() as session:
        return waiting(session, current.handoffs_signed(session, since), now)


def waiting(session: Session, signed: Mapping[str, datetime], now: datetime) -> list[Waiting]:
    """The handoffs of `signed` (referral id -> signing time) that no coach holds yet (status
    `requested` or no coach row), oldest first."""
    states: dict[str, str] = {}
    for batch in in_batches(signed):
        rows = select(CoachHandoff.referral_id, CoachHandoff.status)
        found = session.execute(rows.where(CoachHandoff.referral_id.in_(batch)))
        states.update((referral_id, status) for referral_id, status in found)
    out = []
    for referral_id, at in sorted(signed.items(), key=lambda item: (aware(item[1]), item[0])):
        if states.get(referral_id, "requested") != "requested":
            continue
        minutes = max(0, int((now - aware(at)).total_seconds() // 60))
        out.append(Waiting(referral_id=referral_id, signed_at=aware(at), minutes=minutes))
    return out


def aware(moment: datetime) -> datetime:
    """A stored time as an aware datetime (SQLite gives naive UTC back)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
