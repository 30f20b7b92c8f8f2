"""Aggregate figures for the program dashboard, computed from referral-log events.

Pure: the input is a list of log events as dicts (`seq, at, type, user_ref, iss, patient_id,
encounter_id, data`; `at` a datetime or an ISO-8601 string), the output plain data (dicts, lists,
numbers, strings). No patient identity leaves this module: patient and encounter ids are used
only to join the events of one visit and to count the distinct patients behind a figure. The
output holds no ids, names, free text typed by a physician, nor the time of any single visit.

Unit: a *visit* is one (iss, patient, encounter) for which at least one suggestion was shown (a
launch whose screen suggested nothing is not a visit here, nor in any denominator). It belongs to
the ISO week (and the period) in which suggestions were first shown for it; its decision and
coach events count with it whenever they happened (a referral contacted the next week still
counts for the week of the visit). A screen reloaded three times is one visit, not three.

- suggestions shown: distinct (visit, kind); a rule "fires" once per visit it was shown in.
- accepted / declined: the items of the visit's signed decision (`decision` event, first one).
- coach referral: the decision accepted the `prc-consult` suggestion. Time to referral: decision
  time minus ED arrival (`encounter_start` of the shown suggestions, else of the decision's copy
  of what was shown). Time to contact: the first `coach-contact` minus ED arrival. Arrivals
  given as a date without a time are not used (no honest minute count can be made from them).
- linked to a program: a `coach-link` event, or `coach-close` with "Linked to a program".
  Programs are named only by the catalog (`programs`: the catalog's program names; a coach's
  pick is stored as "Name (phone)"); anything else a coach typed is grouped as "Other" and never
  leaves this module, nor does it without a catalog.

Small-cell suppression (figures split by race, ethnicity, sex, age group, and by linked program):
a figure with 1 to `min_cell - 1` distinct patients behind it is shown as "<{min_cell}", never
as a number (default 5, `DEFAULT_MIN_CELL`; the app reads `DASHBOARD_MIN_CELL`). Zero is shown.
Then complementary suppression, marked "*": where exactly one figure of a sum is hidden
(accepted + declined = decided within a row; the categories of a column add up to the overall
total shown elsewhere), the smallest other non-zero figure of that sum is hidden too, until no
hidden figure can be recovered by subtraction; where a row's total is hidden, so are all its
parts, zeros included. A rate is shown only where both of its parts are. Times from arrival are
summarised only over `min_cell` referrals or more. Suppressed figures leave this module as text
only; their numbers do not reach a template.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

DEFAULT_MIN_CELL = 5
NOT_RECORDED = "Not recorded"
COACH_KIND = "prc-consult"
OTHER_PROGRAM = "Other"
UNNAMED_PROGRAM = "Program not named"
LINKED_REASON = "Linked to a program"
DIMENSIONS = (
    ("race", "Race"),
    ("ethnicity", "Ethnicity"),
    ("sex", "Sex"),
    ("age_group", "Age group"),
)
# Natural orders where there is one; other values follow by size, "Not recorded" last.
ORDER = {
    "age_group": ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "sex": ("female", "male", "other", "unknown"),
}
# Administrative sex codes (FHIR) as words.
LABELS = {"sex": {"female": "Female", "male": "Male", "other": "Other", "unknown": "Unknown"}}
# Upper bounds in minutes (exclusive) and labels of the time-from-arrival histogram.
BUCKETS = (
    (60, "< 1 h"),
    (120, "1–2 h"),
    (240, "2–4 h"),
    (480, "4–8 h"),
    (1440, "8–24 h"),
    (4320, "1–3 days"),
    (None, "3 days +"),
)
EQUITY_COLUMNS = ("visits", "decided", "accepted", "declined")


@dataclass
class _Visit:
    """What the log says about one visit (internal: holds the patient key for counting)."""

    patient: tuple[str | None, str | None]
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


# -- small helpers ----------------------------------------------------------------------------


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


def format_minutes(minutes: float | None) -> str:
    """ "2 h 35 min", "40 min", "3 d 4 h"; "—" for None."""
    if minutes is None:
        return "—"
    total = round(minutes)
    if total < 60:
        return f"{total} min"
    hours, rest = divmod(total, 60)
    if hours < 24:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def rate(part: int, whole: int) -> float | None:
    """part/whole as a fraction, None when whole is 0."""
    return part / whole if whole else None


def percent(value: float | None) -> str:
    return "—" if value is None else f"{round(value * 100)}%"


# -- events to visits -------------------------------------------------------------------------


def _key(event: dict) -> tuple[str | None, str | None, str | None]:
    return (event.get("iss"), event.get("patient_id"), event.get("encounter_id"))


def build_visits(events: Iterable[dict]) -> list[_Visit]:
    """Join the events of each visit: shown suggestions, the decision, the coach's actions."""
    ordered = sorted(events, key=lambda e: (as_utc(e["at"]), e.get("seq") or 0))
    visits: dict[tuple, _Visit] = {}
    by_referral: dict[str, _Visit] = {}
    for event in ordered:
        kind, data, at = event["type"], event.get("data") or {}, as_utc(event["at"])
        if kind == "suggestions-shown":
            if not data.get("suggestions"):
                continue  # the rules suggested nothing: not a visit with suggestions
            visit = visits.get(_key(event))
            if visit is None:
                visit = visits[_key(event)] = _Visit(
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
        elif kind == "decision":
            visit = visits.get(_key(event))
            if visit is None or visit.decided_at is not None:
                continue  # nothing shown for it in this log, or signed already
            visit.decided_at = at
            visit.decisions = [
                (d.get("kind"), bool(d.get("accepted")), d.get("reason"))
                for d in data.get("decisions") or []
            ]
            if visit.arrival is None:
                shown = data.get("shown") or {}
                visit.arrival = arrival_time((shown.get("encounter") or {}).get("start"))
            if data.get("referral"):
                by_referral[str(data["referral"])] = visit
        elif kind.startswith("coach-"):
            visit = by_referral.get(str(data.get("referral"))) or visits.get(_key(event))
            if visit is None:
                continue
            if kind == "coach-contact" and (visit.contact_at is None or at < visit.contact_at):
                visit.contact_at = at
            elif kind == "coach-link" or (
                kind == "coach-close" and data.get("reason") == LINKED_REASON
            ):
                visit.linked = True
                visit.program = (data.get("program") or "").strip() or visit.program
    return list(visits.values())


# -- figures ----------------------------------------------------------------------------------


def _weekly(visits: Sequence[_Visit]) -> list[dict]:
    if not visits:
        return []
    labels = weeks_between(min(v.week for v in visits), max(v.week for v in visits))
    rows = {
        w: {
            "week": w,
            "monday": week_monday(w).isoformat(),
            "visits": 0,
            "suggestions": 0,
            "accepted": 0,
            "declined": 0,
            "coach_referrals": 0,
            "contacted": 0,
            "linked": 0,
            "reasons": Counter(),
        }
        for w in labels
    }
    for visit in visits:
        row = rows[visit.week]
        row["visits"] += 1
        row["suggestions"] += len(visit.kinds)
        for _, accepted, reason in visit.decisions:
            row["accepted" if accepted else "declined"] += 1
            if not accepted:
                row["reasons"][reason or "No reason recorded"] += 1
        if visit.coach_referral:
            row["coach_referrals"] += 1
            row["contacted"] += visit.contact_at is not None
            row["linked"] += visit.linked
    out = []
    for w in labels:
        row = rows[w]
        row["reasons"] = dict(sorted(row["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
        row["acceptance"] = rate(row["accepted"], row["accepted"] + row["declined"])
        out.append(row)
    return out


def _totals(visits: Sequence[_Visit]) -> dict:
    decided = [d for v in visits for d in v.decisions]
    accepted = sum(1 for _, ok, _ in decided if ok)
    coach = [v for v in visits if v.coach_referral]
    return {
        "visits": len(visits),
        "patients": len({v.patient for v in visits}),
        "suggestions": sum(len(v.kinds) for v in visits),
        "signed_visits": sum(1 for v in visits if v.decided_at is not None),
        "decided": len(decided),
        "accepted": accepted,
        "declined": len(decided) - accepted,
        "acceptance": rate(accepted, len(decided)),
        "coach_referrals": len(coach),
        "contacted": sum(1 for v in coach if v.contact_at is not None),
        "linked": sum(1 for v in coach if v.linked),
        "linked_rate": rate(sum(1 for v in coach if v.linked), len(coach)),
    }


def _decline_reasons(visits: Sequence[_Visit]) -> list[dict]:
    counts = Counter(
        reason or "No reason recorded"
        for v in visits
        for _, accepted, reason in v.decisions
        if not accepted
    )
    return [
        {"reason": r, "count": n} for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _kinds(visits: Sequence[_Visit]) -> list[dict]:
    rows: dict[str, dict] = {}
    for visit in visits:
        for kind in visit.kinds:
            rows.setdefault(kind, {"kind": kind, "shown": 0, "accepted": 0, "declined": 0})
            rows[kind]["shown"] += 1
        for kind, accepted, _ in visit.decisions:
            rows.setdefault(kind, {"kind": kind, "shown": 0, "accepted": 0, "declined": 0})
            rows[kind]["accepted" if accepted else "declined"] += 1
    for row in rows.values():
        row["acceptance"] = rate(row["accepted"], row["accepted"] + row["declined"])
    return sorted(rows.values(), key=lambda r: (-r["shown"], r["kind"]))


def _rules(visits: Sequence[_Visit]) -> list[dict]:
    rows: dict[str, dict] = {}
    for visit in visits:
        for rule in visit.rules:
            kind = next((k for k, r in visit.kinds.items() if r == rule), None)
            rows.setdefault(
                rule, {"rule": rule, "kind": kind, "fired": 0, "accepted": 0, "declined": 0}
            )
            rows[rule]["fired"] += 1
        for kind, accepted, _ in visit.decisions:
            rule = visit.kinds.get(kind)
            if rule in rows:
                rows[rule]["accepted" if accepted else "declined"] += 1
    return sorted(rows.values(), key=lambda r: (-r["fired"], r["rule"]))


def distribution(minutes: Sequence[float], min_cell: int) -> dict:
    """Median, quartiles and histogram of durations in minutes; the summary only over
    `min_cell` values or more (one value alone would be one patient's time)."""
    counts = [0] * len(BUCKETS)
    for value in minutes:
        index = next(i for i, (high, _) in enumerate(BUCKETS) if high is None or value < high)
        counts[index] += 1
    shown = len(minutes) >= min_cell
    quartiles = statistics.quantiles(minutes, n=4, method="inclusive") if shown else None
    return {
        "n": len(minutes),
        "suppressed": bool(minutes) and not shown,
        "median": statistics.median(minutes) if shown else None,
        "p25": quartiles[0] if quartiles else None,
        "p75": quartiles[2] if quartiles else None,
        "buckets": [
            {"label": label, "count": count if shown else None}
            for (_, label), count in zip(BUCKETS, counts, strict=True)
        ],
    }


def _times(visits: Sequence[_Visit], min_cell: int) -> dict:
    coach = [v for v in visits if v.coach_referral]
    with_arrival = [v for v in coach if v.arrival is not None]
    to_referral = [
        (v.decided_at - v.arrival).total_seconds() / 60
        for v in with_arrival
        if v.decided_at is not None
    ]
    to_contact = [
        (v.contact_at - v.arrival).total_seconds() / 60
        for v in with_arrival
        if v.contact_at is not None
    ]
    negative = sum(1 for m in to_referral + to_contact if m < 0)
    return {
        "referral": distribution([m for m in to_referral if m >= 0], min_cell),
        "contact": distribution([m for m in to_contact if m >= 0], min_cell),
        "coach_referrals": len(coach),
        "no_arrival_time": len(coach) - len(with_arrival),
        "not_contacted": sum(1 for v in coach if v.contact_at is None),
        "negative": negative,
    }


# -- small-cell suppression -------------------------------------------------------------------


SMALL, COMPLEMENT = "small", "complement"
COMPLEMENT_MARK = "*"


def cell(count: int, min_cell: int, hidden: str | None = None) -> dict:
    """A figure as the page may show it: the number, or only a mark when suppressed ("<k":
    fewer than k patients behind it; "*": hidden so that a "<k" cannot be worked out)."""
    if hidden == SMALL:
        return {"value": None, "text": f"<{min_cell}", "suppressed": True}
    if hidden == COMPLEMENT:
        return {"value": None, "text": COMPLEMENT_MARK, "suppressed": True}
    return {"value": count, "text": str(count), "suppressed": False}


def suppress(
    table: list[dict[str, tuple[int, set]]],
    columns: Sequence[str],
    min_cell: int,
    row_sums: Sequence[tuple[str, Sequence[str]]] = (),
    column_totals: bool = True,
) -> list[dict[str, dict]]:
    """Small-cell suppression of a table of (count, patients) figures; returns cells.

    Primary: 1..min_cell-1 patients behind a figure. Complementary, repeated until nothing
    changes, for each sum whose total is public (`row_sums`: a total column = the sum of part
    columns within a row; with `column_totals`, each column over all rows, whose total the
    page shows elsewhere): if exactly one term is hidden, the smallest other non-zero term is
    hidden too. Where a row's total is hidden, its parts are all hidden, zeros included (a
    visible 0 next to a hidden total would tell what every patient of a small group did).
    """
    hidden: dict[tuple[int, str], str] = {
        (i, c): SMALL
        for i, row in enumerate(table)
        for c in columns
        if 0 < len(row[c][1]) < min_cell
    }

    def hide(group: list[tuple[int, str]]) -> bool:
        inside = [g for g in group if g in hidden]
        others = [g for g in group if g not in hidden and table[g[0]][g[1]][0] > 0]
        if len(inside) != 1 or not others:
            return False
        hidden[min(others, key=lambda g: (table[g[0]][g[1]][0], g))] = COMPLEMENT
        return True

    changed = True
    while changed:
        changed = False
        for i in range(len(table)):
            for total, parts in row_sums:
                if (i, total) in hidden:
                    for part in parts:
                        if (i, part) not in hidden:
                            hidden[(i, part)] = COMPLEMENT
                            changed = True
                changed |= hide([(i, total), *((i, p) for p in parts)])
        if column_totals:
            for c in columns:
                changed |= hide([(i, c) for i in range(len(table))])
    return [
        {c: cell(row[c][0], min_cell, hidden.get((i, c))) for c in columns}
        for i, row in enumerate(table)
    ]


def _ordered(dimension: str, values: dict[str, int]) -> list[str]:
    natural = ORDER.get(dimension, ())
    known = [v for v in natural if v in values]
    rest = sorted(
        (v for v in values if v not in natural and v != NOT_RECORDED),
        key=lambda v: (-values[v], v),
    )
    return known + rest + ([NOT_RECORDED] if NOT_RECORDED in values else [])


def _add(row: dict[str, tuple[int, set]], column: str, n: int, patient: tuple) -> None:
    """Add `n` to a figure and, if n > 0, the patient to those behind it."""
    count, patients = row[column]
    row[column] = (count + n, patients | {patient} if n else patients)


def _equity(visits: Sequence[_Visit], min_cell: int) -> list[dict]:
    """Acceptance by race, ethnicity, sex and age group, small cells suppressed."""
    out = []
    for name, label in DIMENSIONS:
        groups: dict[str, dict[str, tuple[int, set]]] = {}
        for visit in visits:
            value = visit.demographics.get(name) or NOT_RECORDED
            row = groups.setdefault(value, {c: (0, set()) for c in EQUITY_COLUMNS})
            accepted = sum(1 for _, ok, _ in visit.decisions if ok)
            _add(row, "visits", 1, visit.patient)
            _add(row, "decided", len(visit.decisions), visit.patient)
            _add(row, "accepted", accepted, visit.patient)
            _add(row, "declined", len(visit.decisions) - accepted, visit.patient)
        values = _ordered(name, {v: row["visits"][0] for v, row in groups.items()})
        cells = suppress(
            [groups[v] for v in values],
            EQUITY_COLUMNS,
            min_cell,
            row_sums=(("decided", ("accepted", "declined")),),
        )
        rows = []
        for value, shown in zip(values, cells, strict=True):
            if shown["accepted"]["suppressed"] or shown["decided"]["suppressed"]:
                acceptance, text = None, "suppressed"
            else:
                acceptance = rate(shown["accepted"]["value"], shown["decided"]["value"])
                text = percent(acceptance)
            rows.append(
                {
                    "value": LABELS.get(name, {}).get(value, value),
                    **shown,
                    "acceptance": acceptance,
                    "acceptance_text": text,
                }
            )
        out.append({"name": name, "label": label, "rows": rows})
    return out


def catalog_program(text: str | None, programs: Collection[str]) -> str:
    """The catalog name a coach's program entry stands for; "Other" for free text.

    A pick from the catalog is stored as "Name (phone)"; a typed entry counts only when it is a
    catalog name (letter case aside). Free text can hold names and phone numbers: never shown.
    """
    text = (text or "").strip()
    if not text:
        return UNNAMED_PROGRAM
    folded = text.casefold()
    for name in programs:
        if folded == name.casefold() or folded.startswith(name.casefold() + " ("):
            return name
    return OTHER_PROGRAM


def _programs(visits: Sequence[_Visit], min_cell: int, programs: Collection[str]) -> list[dict]:
    """Handoffs linked per catalog program (free text as "Other"), small cells suppressed."""
    by_length = sorted(programs, key=len, reverse=True)  # "Bridge Clinic East" before "Bridge.."
    groups: dict[str, dict[str, tuple[int, set]]] = {}
    for visit in visits:
        if visit.coach_referral and visit.linked:
            name = catalog_program(visit.program, by_length)
            count, patients = groups.get(name, {"linked": (0, set())})["linked"]
            groups[name] = {"linked": (count + 1, patients | {visit.patient})}
    names = sorted(groups, key=lambda n: (-groups[n]["linked"][0], n))
    cells = suppress([groups[n] for n in names], ("linked",), min_cell)
    return [{"program": n, "linked": c["linked"]} for n, c in zip(names, cells, strict=True)]


def summarize(
    events: Iterable[dict],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    programs: Collection[str] = (),
) -> dict:
    """Every dashboard figure for the visits first shown in [start, end) (None: open).

    `programs`: the catalog's program names, the only program names the figures may carry.
    """
    if min_cell < 1:
        raise ValueError("min_cell must be at least 1")
    visits = [
        v
        for v in build_visits(events)
        if (start is None or v.first_shown >= as_utc(start))
        and (end is None or v.first_shown < as_utc(end))
    ]
    return {
        "min_cell": min_cell,
        "totals": _totals(visits),
        "weeks": _weekly(visits),
        "decline_reasons": _decline_reasons(visits),
        "kinds": _kinds(visits),
        "rules": _rules(visits),
        "times": _times(visits, min_cell),
        "programs": _programs(visits, min_cell, programs),
        "equity": _equity(visits, min_cell),
    }
