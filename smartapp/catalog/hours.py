"""Opening hours: a program's weekly windows and closures, whether it is open at a moment, and
its hours as short text (``Mon-Fri 08:00-17:00; Sat 09:00-12:00``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from smartapp.catalog.codes import DATE_RE
from smartapp.catalog.conventions import _AvailableTime, _NotAvailable

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

Closure = tuple[datetime, datetime | None, str]
"""Closed from the first time until the second (None: until further notice), and why."""

Spans = tuple[tuple[time, time | None], ...]
"""One day's opening spans, in order (an end of None: till midnight)."""


@dataclass(frozen=True)
class Window:
    """Open on these weekdays (0 = Monday) from ``start`` to ``end`` (None: till midnight)."""

    days: tuple[int, ...]
    start: time
    end: time | None


def _clock(value: str) -> time:
    return time.fromisoformat(value)


def windows_of(hours: Sequence[_AvailableTime]) -> tuple[Window, ...]:
    """The weekly windows of a HealthcareService's ``availableTime`` lines (checked already)."""
    return tuple(
        Window(
            days=tuple(DAYS.index(day) for day in line.daysOfWeek),
            start=time.min if line.allDay else _clock(line.availableStartTime or ""),
            end=None if line.allDay else _clock(line.availableEndTime or ""),
        )
        for line in hours
    )


def closure_bound(value: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A closure bound as an aware datetime; a bare date covers that whole local day."""
    if DATE_RE.fullmatch(value):
        day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
        return datetime.combine(day, time.min, tzinfo=zone)
    return datetime.fromisoformat(value)


def closures_of(gaps: Sequence[_NotAvailable], zone: ZoneInfo) -> tuple[Closure, ...]:
    """The closures of a HealthcareService's ``notAvailable`` lines, in the catalog's zone."""
    return tuple(
        (
            closure_bound(gap.during.start, zone, end=False),
            closure_bound(gap.during.end, zone, end=True) if gap.during.end else None,
            gap.description or "",
        )
        for gap in gaps
        if gap.during is not None and gap.during.start is not None
    )


def is_open(
    windows: Sequence[Window], closures: Sequence[Closure], timezone: str, at: datetime
) -> bool:
    """Whether the hours are open at ``at`` in ``timezone``.

    An aware datetime is converted to the zone; a naive one is read as local time there. A
    closure overrides the weekly hours."""
    zone = ZoneInfo(timezone)
    local = at.astimezone(zone) if at.tzinfo else at.replace(tzinfo=zone)
    for start, end, _reason in closures:
        if start <= local and (end is None or local < end):
            return False
    clock = local.time().replace(tzinfo=None)
    return any(
        local.weekday() in w.days and w.start <= clock and (w.end is None or clock < w.end)
        for w in windows
    )


def _format_clock(value: time) -> str:
    return value.strftime("%H:%M" if value.second == 0 else "%H:%M:%S")


def _clock_text(value: time, words: HoursWords) -> str:
    if words.clock is None:
        return _format_clock(value)
    return value.strftime(words.clock).lstrip("0")


def _spans_per_day(windows: Sequence[Window]) -> list[Spans]:
    """Each weekday's spans (Monday first); open all day hides any other span that day."""
    per_day: list[Spans] = []
    for day in range(7):
        spans = {(w.start, w.end) for w in windows if day in w.days}
        if (time.min, None) in spans:
            spans = {(time.min, None)}
        per_day.append(tuple(sorted(spans, key=lambda span: (span[0], span[1] or time.max))))
    return per_day


def _runs(per_day: list[Spans]) -> dict[Spans, list[tuple[int, int]]]:
    """The runs of consecutive days with the same spans (first and last day), per spans."""
    runs: dict[Spans, list[tuple[int, int]]] = {}
    day = 0
    while day < 7:
        if not per_day[day]:
            day += 1
            continue
        last = day
        while last + 1 < 7 and per_day[last + 1] == per_day[day]:
            last += 1
        runs.setdefault(per_day[day], []).append((day, last))
        day = last + 1
    return runs


@dataclass(frozen=True)
class HoursWords:
    """The words hours are written in (English by default; the discharge sheet passes its
    language's, from its text files)."""

    days: tuple[str, ...] = DAY_LABELS
    daily: str = "Daily"
    all_day: str = "24 hours"
    none: str = "No regular hours"
    clock: str | None = None  # a strftime format for times (None: 08:00, 24-hour)


def _run_text(
    spans: Spans, day_runs: list[tuple[int, int]], words: HoursWords = HoursWords()
) -> str:
    """``Mon-Fri 08:00-17:00``, ``Tue, Thu 13:00-17:00``, ``Daily 24 hours``."""
    labels = words.days
    if day_runs == [(0, 6)]:
        days = words.daily
    else:
        days = ", ".join(labels[a] if a == b else f"{labels[a]}-{labels[b]}" for a, b in day_runs)
    times = ", ".join(
        words.all_day if end is None else f"{_clock_text(start, words)}-{_clock_text(end, words)}"
        for start, end in spans
    )
    return f"{days} {times}"


def hours_text(windows: Sequence[Window], words: HoursWords = HoursWords()) -> str:
    """Weekly hours as short text, e.g. ``Mon-Fri 08:00-17:00; Sat 09:00-12:00``.

    Consecutive days with the same hours are joined into a range; days with the same hours
    that are not consecutive share one entry (``Tue, Thu 13:00-17:00``); ``Daily`` is all week."""
    runs = _runs(_spans_per_day(windows))
    parts = [_run_text(spans, day_runs, words) for spans, day_runs in runs.items()]
    return "; ".join(parts) if parts else words.none
