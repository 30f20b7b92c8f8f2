"""The dashboard's tables per group in the database: acceptance per demographic group, and
handoffs per catalog program and partner, named at view time from the few distinct texts the
visits share (the catalog may change); small cells suppressed as the pure tables are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session

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
    Directory,
    by_partner,
    partner_name,
    spread,
    suppressed_table,
)
from smartapp.staff.dashboard.sums import Behind, F, Where, is_linked, kept_texts, one_if, summed
from smartapp.staff.dashboard.suppression import Row


class Equity:
    """Visits, decided, accepted and declined items per value of each dimension
    (`groups._equity_groups`): one GROUP BY over the four dimensions together, added up per
    dimension in Python (sums add up; the patients behind them are counted apart)."""

    FLAGS: Mapping[str, Callable[[], ColumnElement[bool]]] = {
        "visits": lambda: literal(True),
        "decided": lambda: F.c.decisions > 0,
        "accepted": lambda: F.c.accepted > 0,
        "declined": lambda: F.c.decisions > F.c.accepted,
    }

    def __init__(self, session: Session, where: Where, behind: Behind) -> None:
        c = F.c
        grouped = session.execute(
            select(
                c.demographics,
                func.count(),
                summed(c.decisions),
                summed(c.accepted),
                *(summed(one_if(flag())) for flag in list(self.FLAGS.values())[1:]),
            )
            .where(*where)
            .group_by(c.demographics)
        ).all()
        texts = kept_texts(session, [found for found, *_ in grouped])
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


# What each outcome column counts, as a condition on a figure row.
_OUTCOME_FLAGS: Mapping[str, Callable[[], ColumnElement[bool]]] = {
    "linked": lambda: is_linked() > 0,
    "by_partner": lambda: F.c.by_partner == 1,
    "by_coach": lambda: F.c.by_coach == 1,
    "attended": lambda: F.c.attended == 1,
    "engaged": lambda: F.c.engaged == 1,
}


def _coach_linked() -> ColumnElement[bool]:
    return and_(F.c.coach == 1, is_linked() > 0)


def _add_up(into: dict[Any, list], key: Any, counts: Sequence[int], text: int) -> None:
    """Add a group of entries' outcome counts into a named row (and remember the entries)."""
    found = into.setdefault(key, [[0] * len(counts), []])
    found[0] = [a + b for a, b in zip(found[0], counts, strict=True)]
    found[1].append(text)


class Labels:
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
        behind: Behind,
    ) -> None:
        self.session = session
        self.where = [*where, F.c.handoff == 1]
        self.program: dict[int, str] = {}
        self.partner: dict[int, str] = {}
        self._in: dict[int, ColumnElement[bool]] = {}  # one IN (...) per row, for its figures
        sums = self._named_sums(names, directory)
        program, partner = self.program, self.partner
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
        self.linked = {
            name: {"linked": behind.figure(n, self._among(texts, _coach_linked))}
            for name, (n, texts) in linked.items()
        }

        def rows(found: Mapping[Any, list]) -> dict[Any, Row]:
            return {
                key: {
                    column: behind.figure(n, self._among(texts, _OUTCOME_FLAGS[column]))
                    for column, n in zip(OUTCOME_COLUMNS, counts, strict=True)
                }
                for key, (counts, texts) in found.items()
            }

        self.pairs = rows(pairs)
        self.subtotals = rows(partners)

    def _named_sums(self, names: Sequence[str], directory: Directory) -> dict[int, tuple]:
        """Per distinct program entries: (coach referrals linked, then the outcome columns'
        counts); each entries' program and partner names put in `program` and `partner`."""
        c = F.c
        by_length = sorted(names, key=len, reverse=True)
        grouped = self.session.execute(
            select(
                c.labels,
                summed(c.coach * is_linked()),
                summed(is_linked()),
                summed(c.by_partner),
                summed(c.by_coach),
                summed(c.attended),
                summed(c.engaged),
            )
            .where(*self.where)
            .group_by(c.labels)
        ).all()
        texts = kept_texts(self.session, [found for found, *_ in grouped])
        sums: dict[int, tuple] = {}
        for text, *counts in grouped:
            _, *entries, named = texts[text]
            self.program[text] = entries_program(
                tuple(e for e in entries if e), by_length, directory.programs
            )
            found = named or directory.partner_of.get(self.program[text])
            self.partner[text] = partner_name(found, directory)
            sums[text] = tuple(counts)
        return sums

    def _among(self, texts: list[int], flag: Callable[[], Any]) -> Callable[[], Any]:
        """The condition of a figure: the handoffs of a row's entries where `flag` holds."""

        def condition() -> ColumnElement[bool]:
            if id(texts) not in self._in:
                self._in[id(texts)] = and_(F.c.handoff == 1, F.c.labels.in_(texts))
            return and_(self._in[id(texts)], flag())

        return condition

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
                or_(is_linked() > 0, c.attended == 1, c.engaged == 1),
            )
            .order_by(c.to_attended)
        ):
            partner, program = self.partner[found], self.program[found]
            per_row.setdefault((partner, program), []).append(minutes)
            per_row.setdefault((partner, None), []).append(minutes)

        def spread_of(partner: str, program: str | None) -> dict:
            return spread(per_row.get((partner, program), []), min_cell)

        return suppressed_table(by_partner(self.pairs), self.subtotals, min_cell, spread_of)
