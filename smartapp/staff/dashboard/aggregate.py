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
the threshold, reaches it (`_Behind`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from smartapp.audit.models import LogVisitFigure, LogVisitText
from smartapp.staff.dashboard.columns import week_label, week_number
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
    spread,
    suppressed_table,
)
from smartapp.staff.dashboard.suppression import Row
from smartapp.staff.dashboard.visits import as_utc, week_monday, weeks_between

F: Table = LogVisitFigure.__table__  # type: ignore[assignment]
T: Table = LogVisitText.__table__  # type: ignore[assignment]
Where = Sequence[ColumnElement[bool]]
# The Visit attribute of an outcome time -> its column.
_OUTCOME_SPANS = {
    "first_contact_at": "to_first_contact",
    "scheduled_at": "to_scheduled",
    "attended_at": "to_attended",
}


def _texts(session: Session, digests: Collection[int]) -> dict[int, Any]:
    """The JSON values kept under these digests (`columns.figure_row`), parsed."""
    out: dict[int, Any] = {}
    wanted = sorted(set(digests))
    for first in range(0, len(wanted), 500):
        part = wanted[first : first + 500]
        for found, text in session.execute(
            select(T.c.digest, T.c.text).where(T.c.digest.in_(part))
        ):
            out[found] = orjson.loads(text)
    return out


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def _when(condition: ColumnElement[bool]) -> Any:
    """1 where the condition holds, else 0 (NULL: 0), to be summed."""
    return case((condition, 1), else_=0)


def _patients() -> Any:
    """Distinct patients (along the index on (patient, first shown) where unfiltered)."""
    return func.count(func.distinct(F.c.patient))


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
    sums = _Sums(session, where)
    by_shape = _shapes(session, sums)
    shapes = list(by_shape.values())
    behind = _Behind(session, where, min_cell)
    labelled = _Labels(session, where, names, directory, behind)
    equity = _Equity(session, where, behind)
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
        "times": _times(session, where, sums, min_cell),
        "programs": labelled.linked_programs(min_cell),
        "equity": equity.tables(min_cell),
        "outcomes": {
            "totals": _outcome_totals(sums),
            "times": _outcome_times(session, where, sums, min_cell),
            "partners": labelled.outcome_table(min_cell),
        },
    }


# -- sums over the period ---------------------------------------------------------------------


def _linked(table: Any = F) -> Any:
    return table.c.by_partner + table.c.by_coach


class _Sums:
    """Every figure that is a sum over the period's visits: the totals, the weeks' and the
    outcome totals in one pass grouped by week and shape (kinds, rules and decisions: the
    kinds, rules and decline reasons are counted from the groups), and the counts and
    histograms of the times from arrival, each a range of an index on (coach or handoff,
    minutes, first shown)."""

    def __init__(self, session: Session, where: Where) -> None:
        c = F.c
        wanted: dict[str, Any] = {
            "visits": func.count(),
            "suggestions": _sum(c.suggestions),
            "signed": _sum(c.signed),
            "decided": _sum(c.decisions),
            "accepted": _sum(c.accepted),
            "coach": _sum(c.coach),
            "contacted": _sum(c.coach * c.contacted),
            "linked": _sum(c.coach * _linked()),
            "coach_arrival": _sum(c.coach * c.arrival),
            "handoffs": _sum(c.handoff),
            "handoff_contacted": _sum(c.handoff * c.first_contacted),
            "handoff_by_partner": _sum(c.handoff * c.by_partner),
            "handoff_linked": _sum(c.handoff * _linked()),
            "handoff_attended": _sum(c.handoff * c.attended),
            "handoff_engaged": _sum(c.handoff * c.engaged),
            "handoff_no_arrival": _sum(c.handoff * (1 - c.arrival)),
        }
        query = (
            select(c.week, c.shape, func.min(c.id), *(e.label(k) for k, e in wanted.items()))
            .where(*where)
            .group_by(c.week, c.shape)
        )
        self.row: dict[str, int] = dict.fromkeys(wanted, 0)
        self.weeks: dict[int, dict[str, int]] = {}
        self.groups: list[tuple[int, int, int, int]] = []  # (week, shape, visits, first id)
        for week, shape, first, *values in session.execute(query):
            into = self.weeks.setdefault(week, dict.fromkeys(wanted, 0))
            for name, value in zip(wanted, values, strict=True):
                self.row[name] += value
                into[name] += value
            self.groups.append((week, shape, values[0], first))

        def count(*condition: ColumnElement[bool]) -> Any:
            return select(func.count()).where(*where, *condition).scalar_subquery()

        ranges: dict[str, Any] = {}
        for column, within in (*((s, c.coach) for s in _COACH_SPANS), *_HANDOFF_SPANS.items()):
            value = c[column]
            ranges[f"{column}_n"] = count(within == 1, value >= 0)
            ranges[f"{column}_negative"] = count(within == 1, value < 0)
            if column in _COACH_SPANS:
                for high in _BOUNDS:
                    ranges[f"{column}_{high}"] = count(within == 1, value >= 0, value < high)
        found = session.execute(select(*(e.label(k) for k, e in ranges.items()))).one()
        self.row |= dict(found._mapping)

    def __getitem__(self, name: str) -> int:
        return int(self.row[name] or 0)


_COACH_SPANS = ("to_decision", "to_contact")
# The outcome times' columns, each counted over the handoffs.
_HANDOFF_SPANS = {
    "to_first_contact": F.c.handoff,
    "to_scheduled": F.c.handoff,
    "to_attended": F.c.handoff,
}
_BOUNDS = [high for high, _ in BUCKETS if high is not None]


def _totals(session: Session, where: Where, sums: _Sums) -> dict:
    decided, accepted, coach, linked = (
        sums["decided"],
        sums["accepted"],
        sums["coach"],
        sums["linked"],
    )
    return {
        "visits": sums["visits"],
        "patients": session.execute(select(_patients()).where(*where)).scalar_one(),
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


def _weeks(sums: _Sums, shapes: Mapping[int, Shape]) -> list[dict]:
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


# -- distinct patients behind a figure --------------------------------------------------------


class _Behind:
    """How many distinct patients are behind each figure of the suppressed tables, capped at
    the threshold (all suppression asks). A figure under the threshold in items needs no
    query (fewer items, fewer patients), nor one over `min_cell` times the most visits any
    patient has (so many visits are that many patients at least); the others are asked
    together, each reading only its first rows (a large group finds its `min_cell` patients
    at once); a figure those rows leave undecided is counted exactly."""

    PER_FIGURE = 4  # rows read per figure, times min_cell

    def __init__(self, session: Session, where: Where, min_cell: int) -> None:
        self.session = session
        self.where = list(where)
        self.min_cell = min_cell
        self.asked: list[tuple[ColumnElement[bool], set]] = []
        self._most: int | None = None

    def most_visits(self) -> int:
        """The most visits one patient has among all kept visits (read along the patient
        index, once)."""
        if self._most is None:
            per_patient = (
                select(func.count().label("n")).select_from(F).group_by(F.c.patient).subquery()
            )
            found = self.session.execute(select(func.max(per_patient.c.n))).scalar_one()
            self._most = int(found or 0)
        return self._most

    def figure(
        self, count: int, condition: Callable[[], ColumnElement[bool]], visits: int | None = None
    ) -> tuple[int, set]:
        """A (count, patients) figure: the patients' set, filled by `count`, stands for
        min(distinct patients, min_cell) of the rows where `condition` holds; `visits`: how
        many rows (visits) that is, where `count` counts items."""
        if count < self.min_cell:
            return count, set(range(count))
        visits = count if visits is None else visits
        if visits >= self.min_cell * max(self.most_visits(), 1):
            return count, set(range(self.min_cell))
        patients: set = set()
        self.asked.append((condition(), patients))
        return count, patients

    def count(self) -> None:
        """Fill every asked figure's set."""
        limit = self.min_cell * self.PER_FIGURE
        for first in range(0, len(self.asked), 200):
            batch = self.asked[first : first + 200]
            parts = [
                select(literal(i, Integer).label("figure"), F.c.patient)
                .where(*self.where, condition)
                .limit(limit)
                .subquery()
                for i, (condition, _) in enumerate(batch)
            ]
            rows = union_all(*(select(p.c.figure, p.c.patient) for p in parts)).subquery()
            found = {
                i: (int(distinct), int(n))
                for i, distinct, n in self.session.execute(
                    select(
                        rows.c.figure, func.count(func.distinct(rows.c.patient)), func.count()
                    ).group_by(rows.c.figure)
                )
            }
            for i, (condition, patients) in enumerate(batch):
                distinct, n = found.get(i, (0, 0))
                if distinct < self.min_cell and n >= limit:
                    distinct = self.session.execute(
                        select(_patients()).where(*self.where, condition)
                    ).scalar_one()
                patients.update(range(min(distinct, self.min_cell)))


# -- suggestion kinds, rules and decline reasons ----------------------------------------------


Shape = tuple[list[tuple[Any, Any]], list[str], list[tuple[Any, bool, Any]], int]


def _shapes(session: Session, sums: _Sums) -> dict[int, Shape]:
    """The visits' (kinds and rules, decision items) by shape, in the order of their first
    visit: (kind -> rule pairs, rules, decisions, how many visits)."""
    visits: Counter[int] = Counter()
    first: dict[int, int] = {}
    for _, shape, n, found in sums.groups:
        visits[shape] += n
        first[shape] = min(found, first.get(shape, found))
    texts = _texts(session, visits)
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


# -- times from arrival -----------------------------------------------------------------------


def _median(n: int, at: Mapping[int, float]) -> float:
    """`statistics.median` of n sorted values known at the ranks it reads."""
    if n % 2 == 1:
        return at[n // 2]
    return (at[n // 2 - 1] + at[n // 2]) / 2


def _quantile(n: int, at: Mapping[int, float], i: int, parts: int) -> float:
    """The i-th of `statistics.quantiles(method="inclusive", n=parts)` of n > 1 sorted values,
    from the two values it interpolates between."""
    j, delta = divmod(i * (n - 1), parts)
    return (at[j] * (parts - delta) + at[j + 1] * delta) / parts


def _median_ranks(n: int) -> set[int]:
    return {n // 2} if n % 2 else {n // 2 - 1, n // 2}


def _quantile_ranks(n: int, i: int, parts: int) -> set[int]:
    if n < 2:
        return {0}
    j = i * (n - 1) // parts
    return {j, j + 1}


def _spread_ranks(n: int) -> set[int]:
    return _median_ranks(n) | _quantile_ranks(n, 9, 10)


def _at_ranks(
    session: Session, value: Any, where: Where, ranks: Collection[int]
) -> dict[int, float]:
    """The values (minutes, 0 and over) at these 0-based ranks in sorted order: each one
    read with OFFSET along the index on (coach or handoff, minutes, first shown), no sort."""
    parts = [
        select(literal(rank, Integer).label("rank"), value.label("v"))
        .where(*where, value >= 0)
        .order_by(value)
        .limit(1)
        .offset(rank)
        .subquery()
        for rank in sorted(ranks)
    ]
    query = union_all(*(select(p.c.rank, p.c.v) for p in parts))
    return {int(rank): float(v) for rank, v in session.execute(query)}


def _distribution(session: Session, where: Where, sums: _Sums, column: str, min_cell: int) -> dict:
    """`figures.distribution` of a time from arrival over the period's coach referrals."""
    n = sums[f"{column}_n"]
    below = [sums[f"{column}_{high}"] for high in _BOUNDS]
    counts = [b - a for a, b in zip([0, *below], [*below, n], strict=True)]
    shown = n >= min_cell
    median = p25 = p75 = None
    if shown:
        coach = [*where, F.c.coach == 1]
        ranks = _median_ranks(n) | (_quantile_ranks(n, 1, 4) | _quantile_ranks(n, 3, 4))
        ranked = _at_ranks(session, F.c[column], coach, ranks)
        median = _median(n, ranked)
        if n > 1:
            p25, p75 = _quantile(n, ranked, 1, 4), _quantile(n, ranked, 3, 4)
        else:
            p25 = p75 = ranked[0]
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


def _spread(n: int, at: Mapping[int, float], min_cell: int) -> dict:
    """`outcomes.spread` of n values known at the ranks it reads."""
    shown = n >= min_cell and n > 0
    return {
        "n": n,
        "suppressed": bool(n) and not shown,
        "median": _median(n, at) if shown else None,
        "p90": (_quantile(n, at, 9, 10) if n > 1 else at[0]) if shown else None,
    }


def _times(session: Session, where: Where, sums: _Sums, min_cell: int) -> dict:
    """Times from ED arrival to coach referral and to coach contact (`figures.times`)."""
    referrals = sums["coach"]
    return {
        "referral": _distribution(session, where, sums, "to_decision", min_cell),
        "contact": _distribution(session, where, sums, "to_contact", min_cell),
        "coach_referrals": referrals,
        "no_arrival_time": referrals - sums["coach_arrival"],
        "not_contacted": referrals - sums["contacted"],
        "negative": sums["to_decision_negative"] + sums["to_contact_negative"],
    }


# -- groups -----------------------------------------------------------------------------------


class _Equity:
    """Visits, decided, accepted and declined items per value of each dimension
    (`groups._equity_groups`): one GROUP BY over the four dimensions together, added up per
    dimension in Python (sums add up; the patients behind them are counted apart)."""

    FLAGS: Mapping[str, Callable[[], ColumnElement[bool]]] = {
        "visits": lambda: literal(True),
        "decided": lambda: F.c.decisions > 0,
        "accepted": lambda: F.c.accepted > 0,
        "declined": lambda: F.c.decisions > F.c.accepted,
    }

    def __init__(self, session: Session, where: Where, behind: _Behind) -> None:
        c = F.c
        grouped = session.execute(
            select(
                c.demographics,
                func.count(),
                _sum(c.decisions),
                _sum(c.accepted),
                *(_sum(_when(flag())) for flag in list(self.FLAGS.values())[1:]),
            )
            .where(*where)
            .group_by(c.demographics)
        ).all()
        texts = _texts(session, [found for found, *_ in grouped])
        sums: dict[str, dict[str, list]] = {name: {} for name, _ in DIMENSIONS}
        for found, visits, decided, accepted, *flagged in grouped:
            values = texts[found][1:]
            for (name, _), value in zip(DIMENSIONS, values, strict=True):
                into = sums[name].setdefault(value or NOT_RECORDED, [[0] * 4, [0] * 4, []])
                for i, n in enumerate((visits, decided, accepted, decided - accepted)):
                    into[0][i] += n
                for i, n in enumerate((visits, *flagged)):
                    into[1][i] += n
                into[2].append(found)
        self.groups: dict[str, dict[str, Row]] = {}
        for name, groups in sums.items():
            self.groups[name] = {
                value: {
                    column: behind.figure(n, self._condition(digests, column), v)
                    for column, n, v in zip(EQUITY_COLUMNS, counts, visits, strict=True)
                }
                for value, (counts, visits, digests) in groups.items()
            }

    def _condition(self, digests: list[int], column: str) -> Callable[[], ColumnElement]:
        return lambda: and_(F.c.demographics.in_(digests), self.FLAGS[column]())

    def tables(self, min_cell: int) -> list[dict]:
        return [
            equity_table(name, label, self.groups[name], min_cell) for name, label in DIMENSIONS
        ]


def _add_up(into: dict[Any, list], key: Any, counts: Sequence[int], text: int) -> None:
    """Add a group of entries' outcome counts into a named row (and remember the entries)."""
    found = into.setdefault(key, [[0] * len(counts), []])
    found[0] = [a + b for a, b in zip(found[0], counts, strict=True)]
    found[1].append(text)


class _Labels:
    """The kept handoffs named by catalog program and partner, as at view time: the distinct
    program entries (`columns`: `labels`) are named in Python, once each; the figures are
    summed per entries in SQL and added up per name here; the times to the first appointment
    are read in order along their index and split per name here."""

    def __init__(
        self,
        session: Session,
        where: Where,
        names: Sequence[str],
        directory: Directory,
        behind: _Behind,
    ) -> None:
        c = F.c
        self.session = session
        self.where = [*where, c.handoff == 1]
        by_length = sorted(names, key=len, reverse=True)
        program: dict[int, str] = {}
        partner: dict[int, str] = {}
        sums: dict[int, tuple[int, ...]] = {}
        grouped = session.execute(
            select(
                c.labels,
                _sum(c.coach * _linked()),
                _sum(_linked()),
                _sum(c.by_partner),
                _sum(c.by_coach),
                _sum(c.attended),
                _sum(c.engaged),
            )
            .where(*self.where)
            .group_by(c.labels)
        ).all()
        texts = _texts(session, [found for found, *_ in grouped])
        for text, *counts in grouped:
            _, *entries, named = texts[text]
            program[text] = entries_program(
                tuple(e for e in entries if e), by_length, directory.programs
            )
            found = named or directory.partner_of.get(program[text])
            partner[text] = partner_name(found, directory)
            sums[text] = tuple(counts)
        self.program, self.partner = program, partner
        # linked per program (coach referrals); outcomes per (partner, program) and partner
        linked: dict[str, list] = {}
        pairs: dict[tuple[str, str], list] = {}
        partners: dict[str, list] = {}
        for text, (coach_linked, *outcome) in sums.items():
            if coach_linked:
                found = linked.setdefault(program[text], [0, []])
                found[0] += coach_linked
                found[1].append(text)
            if outcome[0] or outcome[3] or outcome[4]:  # linked, attended or engaged
                _add_up(pairs, (partner[text], program[text]), outcome, text)
                _add_up(partners, partner[text], outcome, text)
        flags = {
            "linked": lambda: _linked() > 0,
            "by_partner": lambda: c.by_partner == 1,
            "by_coach": lambda: c.by_coach == 1,
            "attended": lambda: c.attended == 1,
            "engaged": lambda: c.engaged == 1,
        }

        in_row: dict[int, ColumnElement[bool]] = {}  # one IN (...) per row, for its figures

        def among(texts: list[int], flag: Callable[[], Any]) -> Callable[[], Any]:
            def condition() -> ColumnElement[bool]:
                if id(texts) not in in_row:
                    in_row[id(texts)] = and_(c.handoff == 1, c.labels.in_(texts))
                return and_(in_row[id(texts)], flag())

            return condition

        coach_linked_flag = lambda: and_(c.coach == 1, _linked() > 0)  # noqa: E731
        self.linked = {
            name: {"linked": behind.figure(n, among(texts, coach_linked_flag))}
            for name, (n, texts) in linked.items()
        }

        def rows(found: Mapping[Any, list]) -> dict[Any, Row]:
            return {
                key: {
                    column: behind.figure(n, among(texts, flags[column]))
                    for column, n in zip(OUTCOME_COLUMNS, counts, strict=True)
                }
                for key, (counts, texts) in found.items()
            }

        self.pairs = rows(pairs)
        self.subtotals = rows(partners)

    def linked_programs(self, min_cell: int) -> list[dict]:
        """Handoffs linked per catalog program (`groups.linked_programs`)."""
        return linked_table(self.linked, min_cell)

    def outcome_table(self, min_cell: int) -> list[dict]:
        """Outcomes per partner and per program within it (`outcomes.outcome_table`)."""
        if not self.pairs:
            return []
        c = F.c
        # The minutes to the first appointment attended, in order along their index (no
        # sort), split per row here: each row's are then in order for `spread`.
        per_row: dict[tuple[str, str | None], list[float]] = {}
        for found, minutes in self.session.execute(
            select(c.labels, c.to_attended)
            .where(
                *self.where,
                c.to_attended >= 0,
                or_(_linked() > 0, c.attended == 1, c.engaged == 1),
            )
            .order_by(c.to_attended)
        ):
            partner, program = self.partner[found], self.program[found]
            per_row.setdefault((partner, program), []).append(minutes)
            per_row.setdefault((partner, None), []).append(minutes)

        def spread_of(partner: str, program: str | None) -> dict:
            return spread(per_row.get((partner, program), []), min_cell)

        return suppressed_table(by_partner(self.pairs), self.subtotals, min_cell, spread_of)


# -- outcomes ---------------------------------------------------------------------------------


def _outcome_totals(sums: _Sums) -> dict:
    """`outcomes.outcome_totals` over the period's handoffs."""
    n, linked, by_partner = sums["handoffs"], sums["handoff_linked"], sums["handoff_by_partner"]
    attended, engaged = sums["handoff_attended"], sums["handoff_engaged"]
    return {
        "handoffs": n,
        "contacted": sums["handoff_contacted"],
        "linked": linked,
        "by_partner": by_partner,
        "by_coach": linked - by_partner,
        "attended": attended,
        "engaged": engaged,
        "linked_rate": rate(linked, n),
        "attended_rate": rate(attended, n),
        "engaged_rate": rate(engaged, n),
    }


def _outcome_times(session: Session, where: Where, sums: _Sums, min_cell: int) -> dict:
    """`outcomes.outcome_times`: arrival to first contact, scheduled, attended."""
    handoffs = [*where, F.c.handoff == 1]
    out: dict = {"no_arrival_time": sums["handoff_no_arrival"]}
    for name, attribute in TIMES:
        column = _OUTCOME_SPANS[attribute]
        n = sums[f"{column}_n"]
        at: Mapping[int, float] = {}
        if n >= min_cell:
            at = _at_ranks(session, F.c[column], handoffs, _spread_ranks(n))
        out[name] = _spread(n, at, min_cell) | {"negative": sums[f"{column}_negative"]}
    return out
