"""SQL sums over the kept visits' figure rows (`log_visit_figure`, see `columns`), shared by
the dashboard's figures in the database (`aggregate`): the period's sums in one pass grouped
by week and shape, the counts and histograms of the times from arrival as index ranges, and
how many distinct patients are behind a figure, capped at the suppression threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    case,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from smartapp.audit.models import LogVisitFigure, LogVisitText
from smartapp.staff.dashboard.figures import BUCKETS

F: Table = LogVisitFigure.__table__  # type: ignore[assignment]
T: Table = LogVisitText.__table__  # type: ignore[assignment]
Where = Sequence[ColumnElement[bool]]
# The Visit attribute of an outcome time -> its column.
OUTCOME_SPANS = {
    "first_contact_at": "to_first_contact",
    "scheduled_at": "to_scheduled",
    "attended_at": "to_attended",
}


def kept_texts(session: Session, digests: Collection[int]) -> dict[int, Any]:
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


def summed(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def one_if(condition: ColumnElement[bool]) -> Any:
    """1 where the condition holds, else 0 (NULL: 0), to be summed."""
    return case((condition, 1), else_=0)


def distinct_patients() -> Any:
    """Distinct patients (along the index on (patient, first shown) where unfiltered)."""
    return func.count(func.distinct(F.c.patient))


def is_linked(table: Any = F) -> Any:
    return table.c.by_partner + table.c.by_coach


class Sums:
    """Every figure that is a sum over the period's visits: the totals, the weeks' and the
    outcome totals in one pass grouped by week and shape (kinds, rules and decisions: the
    kinds, rules and decline reasons are counted from the groups), and the counts and
    histograms of the times from arrival, each a range of an index on (coach or handoff,
    minutes, first shown)."""

    def __init__(self, session: Session, where: Where) -> None:
        c = F.c
        wanted: dict[str, Any] = {
            "visits": func.count(),
            "suggestions": summed(c.suggestions),
            "signed": summed(c.signed),
            "decided": summed(c.decisions),
            "accepted": summed(c.accepted),
            "coach": summed(c.coach),
            "contacted": summed(c.coach * c.contacted),
            "linked": summed(c.coach * is_linked()),
            "coach_arrival": summed(c.coach * c.arrival),
            "handoffs": summed(c.handoff),
            "handoff_contacted": summed(c.handoff * c.first_contacted),
            "handoff_by_partner": summed(c.handoff * c.by_partner),
            "handoff_linked": summed(c.handoff * is_linked()),
            "handoff_attended": summed(c.handoff * c.attended),
            "handoff_engaged": summed(c.handoff * c.engaged),
            "handoff_no_arrival": summed(c.handoff * (1 - c.arrival)),
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
        for column, within in (*((s, c.coach) for s in COACH_SPANS), *HANDOFF_SPANS.items()):
            value = c[column]
            ranges[f"{column}_n"] = count(within == 1, value >= 0)
            ranges[f"{column}_negative"] = count(within == 1, value < 0)
            if column in COACH_SPANS:
                for high in BOUNDS:
                    ranges[f"{column}_{high}"] = count(within == 1, value >= 0, value < high)
        found = session.execute(select(*(e.label(k) for k, e in ranges.items()))).one()
        self.row |= dict(found._mapping)

    def __getitem__(self, name: str) -> int:
        return int(self.row[name] or 0)


COACH_SPANS = ("to_decision", "to_contact")
# The outcome times' columns, each counted over the handoffs.
HANDOFF_SPANS = {
    "to_first_contact": F.c.handoff,
    "to_scheduled": F.c.handoff,
    "to_attended": F.c.handoff,
}
BOUNDS = [high for high, _ in BUCKETS if high is not None]


class Behind:
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
                        select(distinct_patients()).where(*self.where, condition)
                    ).scalar_one()
                patients.update(range(min(distinct, self.min_cell)))
