"""Every dashboard figure added up in the database (issue 15): SQL over the kept visits' typed
columns (`log_visit_figure`, see `columns`), so a view costs a few grouped queries and index
reads, never a pass over every visit in Python.

The figures are exactly those of `figures.summarize_visits` over the same visits (the tests
compare them): sums come from one pass grouped by week and shape (kinds, rules, decisions:
expanded in Python once per group), demographics and program entries are grouped on their
digests and named in Python once per group (catalog and partner names at view time, as the
catalog may change); medians and percentiles of the times from arrival are read at the few
ranks they need by OFFSET along an index and interpolated as `statistics` does (per partner
and program: the attended times in index order, split per row). Small-cell suppression runs
on the same tables as before; only how many distinct patients are behind a figure, capped at
the threshold, reaches it (`Behind`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    select,
)
from sqlalchemy.orm import Session

from smartapp.staff.dashboard.columns import week_label, week_number
from smartapp.staff.dashboard.figures import NO_REASON, _by_count
from smartapp.staff.dashboard.formatting import rate
from smartapp.staff.dashboard.named import Equity, Labels
from smartapp.staff.dashboard.outcomes import Directory, totals_of
from smartapp.staff.dashboard.spans import coach_times, outcome_times
from smartapp.staff.dashboard.sums import Behind, F, Sums, Where, distinct_patients, kept_texts
from smartapp.staff.dashboard.visits import as_utc, week_monday, weeks_between


def dashboard_figures(
    session: Session,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    min_cell: int,
    programs: Collection[str] = (),
    directory: Directory | None = None,
) -> dict:
    """`figures.summarize_visits` over the kept visits first shown in [start, end), in SQL."""
    if min_cell < 1:
        raise ValueError("min_cell must be at least 1")
    directory = directory or Directory()
    names = list(dict.fromkeys([*programs, *directory.programs.values()]))
    where: list[ColumnElement[bool]] = []
    if start is not None:
        where.append(F.c.first_shown >= as_utc(start))
    if end is not None:
        where.append(F.c.first_shown < as_utc(end))
    sums = Sums(session, where)
    by_shape = _shapes(session, sums)
    shapes = list(by_shape.values())
    behind = Behind(session, where, min_cell)
    labelled = Labels(session, where, names, directory, behind)
    equity = Equity(session, where, behind)
    behind.count()
    return {
        "min_cell": min_cell,
        "totals": _totals(session, where, sums),
        "weeks": _weeks(sums, by_shape),
        "decline_reasons": [
            {"reason": r, "count": n} for r, n in _by_count(_reasons(shapes)).items()
        ],
        "kinds": _kinds(shapes),
        "rules": _rules(shapes),
        "times": coach_times(session, where, sums, min_cell),
        "programs": labelled.linked_programs(min_cell),
        "equity": equity.tables(min_cell),
        "outcomes": {
            "totals": _outcome_totals(sums),
            "times": outcome_times(session, where, sums, min_cell),
            "partners": labelled.outcome_table(min_cell),
        },
    }


def _totals(session: Session, where: Where, sums: Sums) -> dict:
    decided, accepted, coach, linked = (
        sums["decided"],
        sums["accepted"],
        sums["coach"],
        sums["linked"],
    )
    return {
        "visits": sums["visits"],
        "patients": session.execute(select(distinct_patients()).where(*where)).scalar_one(),
        "suggestions": sums["suggestions"],
        "signed_visits": sums["signed"],
        "decided": decided,
        "accepted": accepted,
        "declined": decided - accepted,
        "acceptance": rate(accepted, decided),
        "coach_referrals": coach,
        "contacted": sums["contacted"],
        "linked": linked,
        "linked_rate": rate(linked, coach),
    }


def _weeks(sums: Sums, shapes: Mapping[int, Shape]) -> list[dict]:
    """Figures per ISO week, every week from the first to the last (none missing)."""
    if not sums.weeks:
        return []
    reasons: dict[int, Counter[str]] = {}
    for number, shape, n, _ in sums.groups:
        counter = reasons.setdefault(number, Counter())
        for _, ok, reason in shapes[shape][2]:
            if not ok:
                counter[reason or NO_REASON] += n
    out = []
    empty = dict.fromkeys(sums.row, 0)
    for week in weeks_between(week_label(min(sums.weeks)), week_label(max(sums.weeks))):
        found = sums.weeks.get(week_number(week), empty)
        accepted, decided = found["accepted"], found["decided"]
        out.append(
            {
                "week": week,
                "monday": week_monday(week).isoformat(),
                "visits": found["visits"],
                "suggestions": found["suggestions"],
                "accepted": accepted,
                "declined": decided - accepted,
                "coach_referrals": found["coach"],
                "contacted": found["contacted"],
                "linked": found["linked"],
                "reasons": _by_count(reasons.get(week_number(week), Counter())),
                "acceptance": rate(accepted, decided),
            }
        )
    return out


# -- suggestion kinds, rules and decline reasons ----------------------------------------------


Shape = tuple[list[tuple[Any, Any]], list[str], list[tuple[Any, bool, Any]], int]


def _shapes(session: Session, sums: Sums) -> dict[int, Shape]:
    """The visits' (kinds and rules, decision items) by shape, in the order of their first
    visit: (kind -> rule pairs, rules, decisions, how many visits)."""
    visits: Counter[int] = Counter()
    first: dict[int, int] = {}
    for _, shape, n, found in sums.groups:
        visits[shape] += n
        first[shape] = min(found, first.get(shape, found))
    texts = kept_texts(session, visits)
    out: dict[int, Shape] = {}
    for shape in sorted(visits, key=first.__getitem__):
        _, pairs, rules, decisions = texts[shape]
        out[shape] = (
            [tuple(p) for p in pairs],
            rules,
            [tuple(d) for d in decisions],
            visits[shape],
        )
    return out


def _reasons(shapes: Sequence[Shape]) -> Counter[str]:
    found: Counter[str] = Counter()
    for _, _, decisions, n in shapes:
        for _, accepted, reason in decisions:
            if not accepted:
                found[reason or NO_REASON] += n
    return found


def _kinds(shapes: Sequence[Shape]) -> list[dict]:
    """Per suggestion kind: visits shown in, items accepted and declined, acceptance."""
    rows: dict[str, dict] = {}

    def row(kind: str) -> dict:
        return rows.setdefault(kind, {"kind": kind, "shown": 0, "accepted": 0, "declined": 0})

    for pairs, _, decisions, n in shapes:
        for kind, _ in pairs:
            row(kind)["shown"] += n
        for kind, accepted, _ in decisions:
            row(kind)["accepted" if accepted else "declined"] += n
    for found in rows.values():
        found["acceptance"] = rate(found["accepted"], found["accepted"] + found["declined"])
    return sorted(rows.values(), key=lambda r: (-r["shown"], r["kind"]))


def _rules(shapes: Sequence[Shape]) -> list[dict]:
    """Per rule: visits it fired in, and its suggestion's decisions; a rule's kind is the one
    it was shown for in the first visit it fired in (groups come in their first visit's
    order)."""
    rows: dict[str, dict] = {}
    for pairs, rules, decisions, n in shapes:
        kinds = dict(pairs)
        for rule in rules:
            kind = next((k for k, r in pairs if r == rule), None)
            rows.setdefault(
                rule, {"rule": rule, "kind": kind, "fired": 0, "accepted": 0, "declined": 0}
            )
            rows[rule]["fired"] += n
        for kind, accepted, _ in decisions:
            decided_rule = kinds.get(kind)
            if decided_rule in rows:
                rows[decided_rule]["accepted" if accepted else "declined"] += n
    return sorted(rows.values(), key=lambda r: (-r["fired"], r["rule"]))


# -- outcomes ---------------------------------------------------------------------------------


def _outcome_totals(sums: Sums) -> dict:
    """`outcomes.outcome_totals` over the period's handoffs."""
    return totals_of(
        sums["handoffs"],
        sums["handoff_contacted"],
        sums["handoff_linked"],
        sums["handoff_by_partner"],
        sums["handoff_attended"],
        sums["handoff_engaged"],
    )
