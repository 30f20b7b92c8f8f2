"""Every dashboard figure added up in the database (issue 15): SQL over the kept visits' typed
columns (`log_visit_figure`, see `columns`), so a view costs a few grouped queries whatever the
size of the log, never a pass over every visit in Python.

The figures are exactly those of `figures.summarize_visits` over the same visits (the tests
compare them): sums and distinct-patient counts come from GROUP BY; what a visit holds several
of is grouped on its JSON text and expanded per group; medians and percentiles are read as the
few order statistics they need (ROW_NUMBER over the sorted minutes) and interpolated as
`statistics` does; catalog and partner names are given to the groups at view time (a CASE over
the few distinct program entries), as the catalog may change. Small-cell suppression runs on
the same tables as before; only how many distinct patients are behind a figure, capped at the
threshold, reaches it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Table, case, func, or_, select
from sqlalchemy.orm import Session

from smartapp.audit.models import LogVisitFigure
from smartapp.staff.dashboard.figures import BUCKETS, NO_REASON, _by_count
from smartapp.staff.dashboard.formatting import rate
from smartapp.staff.dashboard.groups import (
    DIMENSIONS,
    EQUITY_COLUMNS,
    NOT_RECORDED,
    entries_program,
    equity_table,
    linked_table,
)
from smartapp.staff.dashboard.outcomes import (
    OUTCOME_COLUMNS,
    TIMES,
    Directory,
    by_partner,
    partner_name,
    suppressed_table,
)
from smartapp.staff.dashboard.suppression import Row
from smartapp.staff.dashboard.visits import as_utc, week_monday, weeks_between

F: Table = LogVisitFigure.__table__  # type: ignore[assignment]
Where = Sequence[ColumnElement[bool]]
# Order statistics: {group: (n, {0-based rank: minutes})}
Ranked = dict[tuple, tuple[int, dict[int, float]]]
# The Visit attribute of an outcome time -> its column.
_OUTCOME_SPANS = {
    "first_contact_at": "to_first_contact",
    "scheduled_at": "to_scheduled",
    "attended_at": "to_attended",
}


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def _when(condition: ColumnElement[bool]) -> Any:
    """1 where the condition holds, else 0 (NULL: 0), to be summed."""
    return case((condition, 1), else_=0)


def _patients(condition: ColumnElement[bool] | None = None, table: Any = F) -> Any:
    """Distinct patients (of the rows where `condition` holds)."""
    patient = table.c.patient
    return func.count(func.distinct(patient if condition is None else case((condition, patient))))


def _capped(count: int, min_cell: int) -> set:
    """A stand-in for the patients behind a figure: suppression only asks how many there are
    below the threshold, so `min(count, min_cell)` of them tell it the same."""
    return set(range(min(count, min_cell)))


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
    shapes = _shapes(session, where)
    labelled = _Labels(session, where, names, directory)
    return {
        "min_cell": min_cell,
        "totals": _totals(session, where),
        "weeks": _weeks(session, where),
        "decline_reasons": [
            {"reason": r, "count": n} for r, n in _by_count(_reasons(shapes)).items()
        ],
        "kinds": _kinds(shapes),
        "rules": _rules(shapes),
        "times": _times(session, where, min_cell),
        "programs": labelled.linked_programs(min_cell),
        "equity": [
            equity_table(name, label, _equity_groups(session, where, name, min_cell), min_cell)
            for name, label in DIMENSIONS
        ],
        "outcomes": {
            "totals": _outcome_totals(session, where),
            "times": _outcome_times(session, where, min_cell),
            "partners": labelled.outcome_table(min_cell),
        },
    }


# -- totals and weeks -------------------------------------------------------------------------


def _linked(table: Any = F) -> Any:
    return table.c.by_partner + table.c.by_coach


def _totals(session: Session, where: Where) -> dict:
    c = F.c
    row = session.execute(
        select(
            func.count(),
            _patients(),
            _sum(c.suggestions),
            _sum(c.signed),
            _sum(c.decisions),
            _sum(c.accepted),
            _sum(c.coach),
            _sum(c.coach * c.contacted),
            _sum(c.coach * _linked()),
        ).where(*where)
    ).one()
    visits, patients, suggestions, signed, decided, accepted, coach, contacted, linked = row
    return {
        "visits": visits,
        "patients": patients,
        "suggestions": suggestions,
        "signed_visits": signed,
        "decided": decided,
        "accepted": accepted,
        "declined": decided - accepted,
        "acceptance": rate(accepted, decided),
        "coach_referrals": coach,
        "contacted": contacted,
        "linked": linked,
        "linked_rate": rate(linked, coach),
    }


def _weeks(session: Session, where: Where) -> list[dict]:
    """Figures per ISO week, every week from the first to the last (none missing)."""
    c = F.c
    found = {
        week: (visits, suggestions, accepted, decided, coach, contacted, linked)
        for week, visits, suggestions, accepted, decided, coach, contacted, linked in (
            session.execute(
                select(
                    c.week,
                    func.count(),
                    _sum(c.suggestions),
                    _sum(c.accepted),
                    _sum(c.decisions),
                    _sum(c.coach),
                    _sum(c.coach * c.contacted),
                    _sum(c.coach * _linked()),
                )
                .where(*where)
                .group_by(c.week)
            )
        )
    }
    if not found:
        return []
    reasons: dict[str, Counter[str]] = {}
    for week, declines, n in session.execute(
        select(c.week, c.declines, func.count())
        .where(*where, c.declines != "[]")
        .group_by(c.week, c.declines)
    ):
        counter = reasons.setdefault(week, Counter())
        for reason in orjson.loads(declines):
            counter[reason] += n
    out = []
    for week in weeks_between(min(found), max(found)):
        visits, suggestions, accepted, decided, coach, contacted, linked = found.get(
            week, (0, 0, 0, 0, 0, 0, 0)
        )
        out.append(
            {
                "week": week,
                "monday": week_monday(week).isoformat(),
                "visits": visits,
                "suggestions": suggestions,
                "accepted": accepted,
                "declined": decided - accepted,
                "coach_referrals": coach,
                "contacted": contacted,
                "linked": linked,
                "reasons": _by_count(reasons.get(week, Counter())),
                "acceptance": rate(accepted, decided),
            }
        )
    return out


# -- suggestion kinds, rules and decline reasons ----------------------------------------------


Shape = tuple[list[tuple[Any, Any]], list[str], list[tuple[Any, bool, Any]], int]


def _shapes(session: Session, where: Where) -> list[Shape]:
    """The visits' (kinds and rules, decision items) as groups, in the order of their first
    visit: (kind -> rule pairs, rules, decisions, how many visits)."""
    c = F.c
    rows = session.execute(
        select(c.kinds, c.decided, func.count(), func.min(c.id).label("first"))
        .where(*where)
        .group_by(c.kinds, c.decided)
        .order_by("first")
    )
    out: list[Shape] = []
    for kinds, decided, n, _ in rows:
        pairs, rules = orjson.loads(kinds)
        out.append(([tuple(p) for p in pairs], rules, [tuple(d) for d in orjson.loads(decided)], n))
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


# -- times from arrival -----------------------------------------------------------------------


def _ranked(
    session: Session,
    value: Any,
    where: Where,
    groups: Sequence[Any] = (),
    parts: int = 4,
) -> Ranked:
    """The order statistics the median and the `parts`-quantiles of `value` (minutes, 0 and
    over) need, per group: n, and the values at the ranks they interpolate between."""
    known = [*where, value.isnot(None), value >= 0]
    inner = select(
        *groups,
        value.label("v"),
        (func.row_number().over(partition_by=list(groups) or None, order_by=value) - 1).label("rn"),
        func.count().over(partition_by=list(groups) or None).label("n"),
    ).where(*known)
    s = inner.subquery()
    m = s.c.n - 1
    wanted = [m // 2, s.c.n // 2]
    for i in range(1, parts):
        wanted += [(m * i) // parts, (m * i) // parts + 1]
    group_columns = [s.c[g.name] for g in groups]
    out: Ranked = {}
    for row in session.execute(
        select(*group_columns, s.c.v, s.c.rn, s.c.n).where(or_(*(s.c.rn == w for w in wanted)))
    ):
        key = tuple(row[: len(groups)])
        v, rn, n = row[len(groups) :]
        out.setdefault(key, (int(n), {}))[1][int(rn)] = float(v)
    return out


def _median(n: int, at: Mapping[int, float]) -> float:
    """`statistics.median` of n sorted values known at the ranks it reads."""
    if n % 2 == 1:
        return at[n // 2]
    return (at[n // 2 - 1] + at[n // 2]) / 2


def _quantiles(n: int, at: Mapping[int, float], parts: int) -> list[float]:
    """`statistics.quantiles(method="inclusive")` of n > 1 sorted values, at their ranks."""
    m = n - 1
    out = []
    for i in range(1, parts):
        j, delta = divmod(i * m, parts)
        out.append((at[j] * (parts - delta) + at[j + 1] * delta) / parts)
    return out


def _distribution(
    session: Session, where: Where, value: Any, min_cell: int
) -> dict:  # figures.distribution
    bounds = [high for high, _ in BUCKETS if high is not None]
    known = [*where, value.isnot(None), value >= 0]
    n, *below = session.execute(
        select(func.count(), *(_sum(_when(value < high)) for high in bounds)).where(*known)
    ).one()
    counts = [b - a for a, b in zip([0, *below], [*below, n], strict=True)]
    shown = n >= min_cell
    median = p25 = p75 = None
    if shown:
        ranked = _ranked(session, value, where).get((), (n, {}))[1]
        median = _median(n, ranked)
        quartiles = _quantiles(n, ranked, 4) if n > 1 else [ranked[0]] * 3
        p25, p75 = quartiles[0], quartiles[2]
    return {
        "n": n,
        "suppressed": bool(n) and not shown,
        "median": median,
        "p25": p25,
        "p75": p75,
        "buckets": [
            {"label": label, "count": count if shown else None}
            for (_, label), count in zip(BUCKETS, counts, strict=True)
        ],
    }


def _spread(n: int, at: Mapping[int, float], min_cell: int) -> dict:  # outcomes.spread
    shown = n >= min_cell and n > 0
    return {
        "n": n,
        "suppressed": bool(n) and not shown,
        "median": _median(n, at) if shown else None,
        "p90": (_quantiles(n, at, 10)[8] if n > 1 else at[0]) if shown else None,
    }


def _times(session: Session, where: Where, min_cell: int) -> dict:
    """Times from ED arrival to coach referral and to coach contact (`figures.times`)."""
    c = F.c
    coach = [*where, c.coach == 1]
    referrals, with_arrival, not_contacted, negative = session.execute(
        select(
            func.count(),
            _sum(c.arrival),
            _sum(1 - c.contacted),
            _sum(_when(c.to_decision < 0) + _when(c.to_contact < 0)),
        ).where(*coach)
    ).one()
    return {
        "referral": _distribution(session, coach, c.to_decision, min_cell),
        "contact": _distribution(session, coach, c.to_contact, min_cell),
        "coach_referrals": referrals,
        "no_arrival_time": referrals - with_arrival,
        "not_contacted": not_contacted,
        "negative": negative,
    }


# -- groups -----------------------------------------------------------------------------------


def _equity_groups(session: Session, where: Where, name: str, min_cell: int) -> dict[str, Row]:
    """Visits, decided, accepted and declined items per value of one dimension, with how many
    distinct patients are behind each (`groups._equity_groups`)."""
    c = F.c
    value = func.coalesce(c[name], NOT_RECORDED).label("value")
    s = select(value, c.patient, c.decisions, c.accepted).where(*where).subquery()
    declined = s.c.decisions - s.c.accepted
    rows = session.execute(
        select(
            s.c.value,
            func.count(),
            _sum(s.c.decisions),
            _sum(s.c.accepted),
            _patients(table=s),
            _patients(s.c.decisions > 0, s),
            _patients(s.c.accepted > 0, s),
            _patients(declined > 0, s),
        ).group_by(s.c.value)
    )
    groups: dict[str, Row] = {}
    for group, visits, decided, accepted, *patients in rows:
        counts = (visits, decided, accepted, decided - accepted)
        groups[group] = {
            column: (count, _capped(behind, min_cell))
            for column, count, behind in zip(EQUITY_COLUMNS, counts, patients, strict=True)
        }
    return groups


class _Labels:
    """The kept handoffs named by catalog program and partner, as at view time: the distinct
    program entries (`columns`: `labels`) are named in Python, once each, and every figure per
    program or partner is grouped in SQL on those names (a CASE over the entries)."""

    def __init__(
        self, session: Session, where: Where, names: Sequence[str], directory: Directory
    ) -> None:
        self.session = session
        self.where = [*where, F.c.handoff == 1]
        by_length = sorted(names, key=len, reverse=True)
        program: dict[str, str] = {}
        partner: dict[str, str] = {}
        for text in session.execute(select(F.c.labels).where(*self.where).distinct()).scalars():
            *entries, named = orjson.loads(text)
            program[text] = entries_program(
                tuple(e for e in entries if e), by_length, directory.programs
            )
            found = named or directory.partner_of.get(program[text])
            partner[text] = partner_name(found, directory)
        self.source = None
        if program:
            self.source = (
                select(
                    case(program, value=F.c.labels).label("program"),
                    case(partner, value=F.c.labels).label("partner"),
                    F.c.patient,
                    F.c.coach,
                    F.c.by_partner,
                    F.c.by_coach,
                    F.c.attended,
                    F.c.engaged,
                    F.c.to_attended,
                )
                .where(*self.where)
                .subquery()
            )

    def linked_programs(self, min_cell: int) -> list[dict]:
        """Handoffs linked per catalog program (`groups.linked_programs`)."""
        groups: dict[str, Row] = {}
        if self.source is not None:
            s = self.source
            for program, n, patients in self.session.execute(
                select(s.c.program, func.count(), _patients(table=s))
                .where(s.c.coach == 1, _linked(s) > 0)
                .group_by(s.c.program)
            ):
                groups[program] = {"linked": (n, _capped(patients, min_cell))}
        return linked_table(groups, min_cell)

    def outcome_table(self, min_cell: int) -> list[dict]:
        """Outcomes per partner and per program within it (`outcomes.outcome_table`)."""
        if self.source is None:
            return []
        s = self.source
        flags = {
            "linked": _linked(s) > 0,
            "by_partner": s.c.by_partner == 1,
            "by_coach": s.c.by_coach == 1,
            "attended": s.c.attended == 1,
            "engaged": s.c.engaged == 1,
        }
        assert tuple(flags) == OUTCOME_COLUMNS
        with_outcome = or_(flags["linked"], flags["attended"], flags["engaged"])
        figures = [f for flag in flags.values() for f in (_sum(_when(flag)), _patients(flag, s))]

        def rows(*groups: Any) -> dict[tuple, Row]:
            out: dict[tuple, Row] = {}
            query = select(*groups, *figures).where(with_outcome).group_by(*groups)
            for found in self.session.execute(query):
                values = found[len(groups) :]
                out[tuple(found[: len(groups)])] = {
                    column: (values[2 * i], _capped(values[2 * i + 1], min_cell))
                    for i, column in enumerate(OUTCOME_COLUMNS)
                }
            return out

        pairs = rows(s.c.partner, s.c.program)
        subtotals = {partner: row for (partner,), row in rows(s.c.partner).items()}
        value = s.c.to_attended
        kept = [with_outcome]
        per_pair = _ranked(self.session, value, kept, [s.c.partner, s.c.program], 10)
        per_partner = _ranked(self.session, value, kept, [s.c.partner], 10)

        def spread_of(partner: str, program: str | None) -> dict:
            key = (partner,) if program is None else (partner, program)
            n, at = (per_partner if program is None else per_pair).get(key, (0, {}))
            return _spread(n, at, min_cell)

        return suppressed_table(by_partner(pairs), subtotals, min_cell, spread_of)


# -- outcomes ---------------------------------------------------------------------------------


def _outcome_totals(session: Session, where: Where) -> dict:
    """`outcomes.outcome_totals` over the period's handoffs."""
    c = F.c
    n, contacted, by_partner, linked, attended, engaged = session.execute(
        select(
            func.count(),
            _sum(c.first_contacted),
            _sum(c.by_partner),
            _sum(_linked()),
            _sum(c.attended),
            _sum(c.engaged),
        ).where(*where, c.handoff == 1)
    ).one()
    return {
        "handoffs": n,
        "contacted": contacted,
        "linked": linked,
        "by_partner": by_partner,
        "by_coach": linked - by_partner,
        "attended": attended,
        "engaged": engaged,
        "linked_rate": rate(linked, n),
        "attended_rate": rate(attended, n),
        "engaged_rate": rate(engaged, n),
    }


def _outcome_times(session: Session, where: Where, min_cell: int) -> dict:
    """`outcomes.outcome_times`: arrival to first contact, scheduled, attended."""
    c = F.c
    handoffs = [*where, c.handoff == 1]
    spans = [c[_OUTCOME_SPANS[attribute]] for _, attribute in TIMES]
    no_arrival, *negatives = session.execute(
        select(_sum(1 - c.arrival), *(_sum(_when(span < 0)) for span in spans)).where(*handoffs)
    ).one()
    out: dict = {"no_arrival_time": no_arrival}
    for (name, _), span, negative in zip(TIMES, spans, negatives, strict=True):
        n, at = _ranked(session, span, handoffs, parts=10).get((), (0, {}))
        out[name] = _spread(n, at, min_cell) | {"negative": negative}
    return out
