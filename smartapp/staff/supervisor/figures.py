"""The supervisor view's figures from the referral log's events (pure: plain dicts in, plain
dataclasses out; no database, no Flask).

Events are dicts with `seq`, `at` (aware datetime), `type`, `user_ref` and `data`, as the log
holds them (`holdings.changes` and `signings.events` give the ones each figure reads). The
handoff events carry `data["referral"]`:

- `decision` (Sign): a handoff when its `decisions` accept the coach consult;
- `coach-accept` (the coach is `user_ref`, named by `data["user_name"]`) and
  `handoff-reassign` (`data["to"]`, `data["to_name"]`): who holds the handoff from then on;
- any event whose `data["task_status"]` is closed (`coach-link`, `coach-close`,
  `handoff-status`): the handoff leaves the caseload.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CLOSED = ("completed", "rejected", "cancelled")
OWNER_EVENTS = ("coach-accept", "handoff-reassign")
#: The log event types the supervisor view reads.
TYPES = (
    "decision",
    "coach-accept",
    "coach-contact",
    "coach-link",
    "coach-close",
    "handoff-reassign",
    "handoff-status",
)
PRC_CONSULT = "prc-consult"  # the engine's coach consult kind (smartapp.engine.kinds)
_ABSOLUTE = re.compile(r"^https?://.+/(?=[A-Z][A-Za-z]+/[^/]+$)")


def coach_key(reference: str | None) -> str:
    """One form of a coach's reference: the log keeps `Practitioner/x` where the staff
    session and the reassign event keep the absolute URL."""
    return _ABSOLUTE.sub("", (reference or "").strip())


@dataclass(frozen=True)
class CoachSeries:
    """One coach's caseload on each day shown: the most handoffs open at once (today: so far)."""

    ref: str
    name: str
    counts: tuple[int, ...]

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)


def _ordered(events: Iterable[dict]) -> list[dict]:
    return sorted(
        (e for e in events if e.get("at") is not None and (e.get("data") or {}).get("referral")),
        key=lambda e: (e["at"], e.get("seq") or 0),
    )


def _apply(event: dict, owner: dict[str, str], names: dict[str, str]) -> None:
    """One event's effect on who holds which open handoff."""
    data = event.get("data") or {}
    referral = data["referral"]
    if event["type"] == "coach-accept" and data.get("task_status", "accepted") not in CLOSED:
        ref = coach_key(event.get("user_ref"))
        owner[referral] = ref
        names[ref] = data.get("user_name") or names.get(ref) or ref
    elif event["type"] == "handoff-reassign" and data.get("to"):
        ref = coach_key(data["to"])
        owner[referral] = ref
        names[ref] = data.get("to_name") or names.get(ref) or ref
    if data.get("task_status") in CLOSED:
        owner.pop(referral, None)


def caseload_over_time(
    events: Iterable[dict], days: Sequence[date], zone: ZoneInfo, now: datetime
) -> list[CoachSeries]:
    """Each coach's caseload on each of `days` (local days in `zone`; today until `now`): the
    most handoffs the coach held open at once that day, so a handoff taken and closed within
    one day counts; for every coach who held one on any of them."""
    ordered = _ordered(events)

    def midnight(day: date) -> datetime:
        return min(now, datetime.combine(day, time.min, tzinfo=zone))

    owner: dict[str, str] = {}
    names: dict[str, str] = {}
    held: Counter[str] = Counter()  # each coach's open handoffs, kept as owners change

    def apply(event: dict) -> str | None:
        """Apply one event; the coach it gave a handoff to, if any."""
        referral = event["data"]["referral"]
        before = owner.get(referral)
        _apply(event, owner, names)
        after = owner.get(referral)
        if before == after:
            return None
        if before is not None:
            held[before] -= 1
        if after is not None:
            held[after] += 1
        return after

    series: dict[str, list[int]] = {}
    position = 0
    for index, day in enumerate(days):
        start, end = midnight(day), midnight(day + timedelta(days=1))
        while position < len(ordered) and ordered[position]["at"] < start:
            apply(ordered[position])  # before the day: who holds what
            position += 1
        peak = {ref: count for ref, count in held.items() if count > 0}
        while position < len(ordered) and ordered[position]["at"] < end:
            gained = apply(ordered[position])
            position += 1
            if gained is not None:  # only a coach given one can reach a larger count
                peak[gained] = max(peak.get(gained, 0), held[gained])
        for ref, count in peak.items():
            series.setdefault(ref, [0] * len(days))[index] = count
    return sorted(
        (CoachSeries(ref, names.get(ref, ref), tuple(counts)) for ref, counts in series.items()),
        key=lambda s: (s.name.casefold(), s.ref),
    )


@dataclass(frozen=True)
class Signed:
    """A handoff as signed and first taken: when a coach (or a partner, or a close) first
    took it off the team queue, and how long it waited for that (or has waited till now)."""

    referral_id: str
    signed_at: datetime
    taken_at: datetime | None
    taken_by: str | None  # the coach's name, else how it left the queue
    after_hours: bool

    def waited_minutes(self, now: datetime) -> int:
        end = self.taken_at or now
        return max(0, int((end - self.signed_at).total_seconds() // 60))


def _is_handoff(data: dict) -> bool:
    return any(
        d.get("kind") == PRC_CONSULT and d.get("accepted") for d in data.get("decisions") or []
    )


def signed_handoffs(
    events: Iterable[dict], in_coverage: Callable[[datetime], bool]
) -> list[Signed]:
    """Every handoff signed (oldest first), with when it left the team queue and whether it
    was signed outside the coach program's coverage hours."""
    signed: dict[str, datetime] = {}
    taken: dict[str, tuple[datetime, str]] = {}
    for event in _ordered(events):
        data = event["data"] or {}
        referral = data["referral"]
        if event["type"] == "decision":
            if _is_handoff(data):
                signed.setdefault(referral, event["at"])
            continue
        if referral in taken:
            continue
        if event["type"] == "coach-accept":
            taken[referral] = (event["at"], data.get("user_name") or "a coach")
        elif event["type"] == "handoff-reassign":
            taken[referral] = (event["at"], data.get("to_name") or "a coach")
        elif data.get("task_status") in CLOSED:
            taken[referral] = (event["at"], "closed before a coach took it")
        elif event["type"] == "handoff-status" and data.get("task_status") == "accepted":
            taken[referral] = (event["at"], "accepted by a partner")
    return [
        Signed(
            referral_id=referral,
            signed_at=at,
            taken_at=taken[referral][0] if referral in taken else None,
            taken_by=taken[referral][1] if referral in taken else None,
            after_hours=not in_coverage(at),
        )
        for referral, at in sorted(signed.items(), key=lambda item: item[1])
    ]


@dataclass(frozen=True)
class Coverage:
    """Handoffs signed in a period, inside and outside coverage hours, and the median wait
    (minutes) until a coach took them (those still waiting count their wait so far)."""

    signed: int
    after_hours: int
    median_wait_in_hours: int | None
    median_wait_after_hours: int | None
    still_waiting_after_hours: int


def coverage(rows: Sequence[Signed], now: datetime) -> Coverage:
    """The after-hours coverage figures of `rows`."""

    def median(values: list[int]) -> int | None:
        return int(statistics.median(values)) if values else None

    inside = [r.waited_minutes(now) for r in rows if not r.after_hours]
    outside = [r.waited_minutes(now) for r in rows if r.after_hours]
    return Coverage(
        signed=len(rows),
        after_hours=len(outside),
        median_wait_in_hours=median(inside),
        median_wait_after_hours=median(outside),
        still_waiting_after_hours=sum(1 for r in rows if r.after_hours and r.taken_at is None),
    )


def period_days(end: date, count: int) -> list[date]:
    """The `count` days up to and including `end`, oldest first."""
    return [end - timedelta(days=offset) for offset in range(count - 1, -1, -1)]
