"""Aggregate figures for the program dashboard, computed from referral-log events.

Layout: `visits` joins events into visits, `suppression` hides small cells, `groups` splits
figures by demographic group and by program, this module computes the rest and `summarize`
gathers them; `charts` (SVG geometry) and `views` (the page) sit apart.

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

Outcomes after the ED (issue 11: linked, confirmed by the partner or the coach; first appointment
attended; engaged at 30 days; arrival to first contact and to first appointment), overall and
per partner and program, are defined in `outcomes`. "Linked" here, and in the weekly figures,
counts a partner's confirmation as well as the coach's.

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
from datetime import datetime

from smartapp.staff.dashboard.formatting import format_minutes, percent, rate
from smartapp.staff.dashboard.groups import (
    DIMENSIONS,
    EQUITY_COLUMNS,
    LABELS,
    NOT_RECORDED,
    ORDER,
    OTHER_PROGRAM,
    UNNAMED_PROGRAM,
    catalog_program,
    equity,
    linked_programs,
)
from smartapp.staff.dashboard.outcomes import (
    NO_PARTNER,
    OTHER_PARTNER,
    OUTCOME_COLUMNS,
    Directory,
    outcomes,
)
from smartapp.staff.dashboard.suppression import COMPLEMENT, COMPLEMENT_MARK, SMALL, cell, suppress
from smartapp.staff.dashboard.visits import (
    COACH_KIND,
    LINKED_REASON,
    Visit,
    arrival_time,
    as_utc,
    build_visits,
    iso_week,
    week_monday,
    weeks_between,
)

__all__ = [
    "BUCKETS",
    "COACH_KIND",
    "COMPLEMENT",
    "COMPLEMENT_MARK",
    "DEFAULT_MIN_CELL",
    "DIMENSIONS",
    "NO_PARTNER",
    "OTHER_PARTNER",
    "OUTCOME_COLUMNS",
    "Directory",
    "EQUITY_COLUMNS",
    "LABELS",
    "LINKED_REASON",
    "NOT_RECORDED",
    "NO_REASON",
    "ORDER",
    "OTHER_PROGRAM",
    "SMALL",
    "UNNAMED_PROGRAM",
    "arrival_time",
    "as_utc",
    "build_visits",
    "catalog_program",
    "cell",
    "distribution",
    "format_minutes",
    "iso_week",
    "percent",
    "rate",
    "summarize",
    "summarize_visits",
    "suppress",
    "week_monday",
    "weeks_between",
]

DEFAULT_MIN_CELL = 5
NO_REASON = "No reason recorded"
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


def _by_count(counts: Counter[str]) -> dict[str, int]:
    """Counts largest first, ties by name."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _reasons(visits: Iterable[Visit]) -> Counter[str]:
    """Decline reasons over the visits' decisions ("No reason recorded" for none)."""
    return Counter(
        reason or NO_REASON for v in visits for _, accepted, reason in v.decisions if not accepted
    )


def _week_row(week: str, visits: Sequence[Visit]) -> dict:
    """One ISO week's figures, over the visits first shown in it."""
    accepted = sum(v.accepted for v in visits)
    declined = sum(len(v.decisions) for v in visits) - accepted
    coach = [v for v in visits if v.coach_referral]
    return {
        "week": week,
        "monday": week_monday(week).isoformat(),
        "visits": len(visits),
        "suggestions": sum(len(v.kinds) for v in visits),
        "accepted": accepted,
        "declined": declined,
        "coach_referrals": len(coach),
        "contacted": sum(1 for v in coach if v.contact_at is not None),
        "linked": sum(1 for v in coach if v.linked),
        "reasons": _by_count(_reasons(visits)),
        "acceptance": rate(accepted, accepted + declined),
    }


def weekly(visits: Sequence[Visit]) -> list[dict]:
    """Figures per ISO week, every week from the first to the last (none missing)."""
    if not visits:
        return []
    by_week: dict[str, list[Visit]] = {}
    for visit in visits:
        by_week.setdefault(visit.week, []).append(visit)
    labels = weeks_between(min(by_week), max(by_week))
    return [_week_row(w, by_week.get(w, [])) for w in labels]


def totals(visits: Sequence[Visit]) -> dict:
    """The period's overall figures (the totals the suppressed columns add up to)."""
    decided = sum(len(v.decisions) for v in visits)
    accepted = sum(v.accepted for v in visits)
    coach = [v for v in visits if v.coach_referral]
    linked = sum(1 for v in coach if v.linked)
    return {
        "visits": len(visits),
        "patients": len({v.patient for v in visits}),
        "suggestions": sum(len(v.kinds) for v in visits),
        "signed_visits": sum(1 for v in visits if v.decided_at is not None),
        "decided": decided,
        "accepted": accepted,
        "declined": decided - accepted,
        "acceptance": rate(accepted, decided),
        "coach_referrals": len(coach),
        "contacted": sum(1 for v in coach if v.contact_at is not None),
        "linked": linked,
        "linked_rate": rate(linked, len(coach)),
    }


def decline_reasons(visits: Sequence[Visit]) -> list[dict]:
    """Decline reasons, most frequent first."""
    return [{"reason": r, "count": n} for r, n in _by_count(_reasons(visits)).items()]


def kinds(visits: Sequence[Visit]) -> list[dict]:
    """Per suggestion kind: visits shown in, items accepted and declined, acceptance."""
    rows: dict[str, dict] = {}

    def row(kind: str) -> dict:
        return rows.setdefault(kind, {"kind": kind, "shown": 0, "accepted": 0, "declined": 0})

    for visit in visits:
        for kind in visit.kinds:
            row(kind)["shown"] += 1
        for kind, accepted, _ in visit.decisions:
            row(kind)["accepted" if accepted else "declined"] += 1
    for found in rows.values():
        found["acceptance"] = rate(found["accepted"], found["accepted"] + found["declined"])
    return sorted(rows.values(), key=lambda r: (-r["shown"], r["kind"]))


def rules(visits: Sequence[Visit]) -> list[dict]:
    """Per rule: visits it fired in (once per visit), and its suggestion's decisions."""
    rows: dict[str, dict] = {}
    for visit in visits:
        for rule in visit.rules:
            kind = next((k for k, r in visit.kinds.items() if r == rule), None)
            rows.setdefault(
                rule, {"rule": rule, "kind": kind, "fired": 0, "accepted": 0, "declined": 0}
            )
            rows[rule]["fired"] += 1
        for kind, accepted, _ in visit.decisions:
            decided_rule = visit.kinds.get(kind)
            if decided_rule in rows:
                rows[decided_rule]["accepted" if accepted else "declined"] += 1
    return sorted(rows.values(), key=lambda r: (-r["fired"], r["rule"]))


def distribution(minutes: Sequence[float], min_cell: int) -> dict:
    """Median, quartiles and histogram of durations in minutes; the summary only over
    `min_cell` values or more (one value alone would be one patient's time)."""
    counts = [0] * len(BUCKETS)
    for value in minutes:
        index = next(i for i, (high, _) in enumerate(BUCKETS) if high is None or value < high)
        counts[index] += 1
    shown = len(minutes) >= min_cell
    quartiles: list[float] | None = None
    if shown:  # one value alone (a threshold of 1) is its own quartiles
        many = len(minutes) > 1
        quartiles = (
            statistics.quantiles(minutes, n=4, method="inclusive") if many else list(minutes) * 3
        )
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


def _minutes_since(arrival: datetime, later: datetime | None) -> list[float]:
    """Minutes from arrival to `later`, as a list of none or one."""
    return [] if later is None else [(later - arrival).total_seconds() / 60]


def times(visits: Sequence[Visit], min_cell: int) -> dict:
    """Times from ED arrival to coach referral and to coach contact (arrivals with a time of
    day only; negative spans counted apart, not summarised)."""
    coach = [v for v in visits if v.coach_referral]
    to_referral: list[float] = []
    to_contact: list[float] = []
    with_arrival = 0
    for visit in coach:
        if visit.arrival is None:
            continue
        with_arrival += 1
        to_referral += _minutes_since(visit.arrival, visit.decided_at)
        to_contact += _minutes_since(visit.arrival, visit.contact_at)
    negative = sum(1 for m in to_referral + to_contact if m < 0)
    return {
        "referral": distribution([m for m in to_referral if m >= 0], min_cell),
        "contact": distribution([m for m in to_contact if m >= 0], min_cell),
        "coach_referrals": len(coach),
        "no_arrival_time": len(coach) - with_arrival,
        "not_contacted": sum(1 for v in coach if v.contact_at is None),
        "negative": negative,
    }


def summarize(
    events: Iterable[dict],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    programs: Collection[str] = (),
    directory: Directory | None = None,
) -> dict:
    """Every dashboard figure for the visits first shown in [start, end) (None: open).

    `programs`: the catalog's program names, the only program names the figures may carry;
    `directory`: the catalog's program ids and the partners' names, for the outcomes (a
    lifecycle update names its program and partner by id).
    """
    return summarize_visits(
        build_visits(events),
        start=start,
        end=end,
        min_cell=min_cell,
        programs=programs,
        directory=directory,
    )


def summarize_visits(
    all_visits: Iterable[Visit],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    programs: Collection[str] = (),
    directory: Directory | None = None,
) -> dict:
    """`summarize` from visits already joined (the dashboard's kept visit summaries)."""
    if min_cell < 1:
        raise ValueError("min_cell must be at least 1")
    directory = directory or Directory()
    names = list(dict.fromkeys([*programs, *directory.programs.values()]))
    low = as_utc(start) if start is not None else None
    high = as_utc(end) if end is not None else None
    visits = [
        v
        for v in all_visits
        if (low is None or v.first_shown >= low) and (high is None or v.first_shown < high)
    ]
    return {
        "min_cell": min_cell,
        "totals": totals(visits),
        "weeks": weekly(visits),
        "decline_reasons": decline_reasons(visits),
        "kinds": kinds(visits),
        "rules": rules(visits),
        "times": times(visits, min_cell),
        "programs": linked_programs(visits, min_cell, names, directory.programs),
        "equity": equity(visits, min_cell),
        "outcomes": outcomes(visits, min_cell, names, directory),
    }
