"""What is kept beside the referral log so that staff pages read it instead of the whole log
(issue 15): the dashboard's visits, the console's user names and its event tags. Each is
brought up to the log's head from the last event it holds (`log_summary_state`, one row per
summary), under the chain lock (no append races it; a view that finds nothing new takes no
lock), and made again from the first event when a row of the log was changed or deleted (a
tamper mark): a summary never keeps what the log no longer says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from smartapp.audit import chain
from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent, LogSummaryState, LogTamperMark
from smartapp.audit.rows import StoredEvent
from smartapp.db import Database

#: Events taken into a summary per unit of work (the chain lock is held for each; appends go
#: on between them), and read at a time within one.
UNIT_EVENTS = 20_000
#: A catch-up of more units than this (over 40,000 events: a log kept before the summary's
#: tables, a long pause) grew the summary in bulk: its `refresh` runs after it.
REFRESH_AFTER_UNITS = 2


@dataclass(frozen=True)
class Summary:
    """One summary kept beside the log: its `name` in `log_summary_state`, the event `types`
    it reads, `clear` (deletes what it kept, before it is made again), `add` (takes the
    events after..upto of its types into it; returns how many damaged rows it left out) and
    `refresh` (what its tables need after they grew in bulk, if anything)."""

    name: str
    types: tuple[str, ...]
    clear: Callable[[Session], None]
    add: Callable[[Session, int, int], int]
    refresh: Callable[[Database], None] | None = None


def catch_up(session: Session, summary: Summary, limit: int | None = None) -> tuple[bool, int]:
    """Bring `summary` up to the log's head, at most `limit` events in this unit of work (the
    chain lock is held until it ends: a rebuild of millions of events in one unit would hold
    every append back for minutes); (whether it reaches the head, damaged rows left out)."""
    head, mark = _heads(session, summary.types)
    state = _state(session, summary.name)
    if state is not None and state[0] >= head and state[1] >= mark:
        return True, state[2]
    chain.lock(session)
    head, mark = _heads(session, summary.types)
    state = _state(session, summary.name)
    if state is None:
        values = {"name": summary.name, "seq": 0, "mark": 0, "unreadable": 0}
        session.execute(insert(LogSummaryState).values(values))
        state = (0, 0, 0)
    done, unreadable = state[0], state[2]
    if mark > state[1]:
        summary.clear(session)
        done, unreadable = 0, 0
    upto = head if limit is None else min(head, done + limit)
    unreadable += summary.add(session, done, upto)
    session.execute(
        update(LogSummaryState)
        .where(LogSummaryState.name == summary.name)
        .values(seq=upto, mark=mark, unreadable=unreadable)
    )
    return upto >= head, unreadable


def bring_up_to_date(
    db: Database,
    summary: Summary,
    unit: int = UNIT_EVENTS,
    refresh_after: int = REFRESH_AFTER_UNITS,
) -> int:
    """`catch_up` in units of work of their own of at most `unit` events, up to the log's
    head, then the summary's `refresh` after more than `refresh_after` units; how many
    damaged rows the summary left out."""
    done, unreadable, units = False, 0, 0
    while not done:
        with db.session() as session:
            done, unreadable = catch_up(session, summary, unit)
        units += 1
    if units > refresh_after and summary.refresh is not None:
        summary.refresh(db)
    return unreadable


def ranges(
    session: Session, types: tuple[str, ...], after: int, upto: int
) -> Iterator[list[StoredEvent]]:
    """The events of `types` after..upto in seq order, a range of UNIT_EVENTS seqs at a time,
    each read whole before it is given (the caller writes to the same session between)."""
    for start in range(after, upto, UNIT_EVENTS):
        end = min(start + UNIT_EVENTS, upto)
        query = stored.select_events(
            LogEvent.type.in_(types), LogEvent.seq > start, LogEvent.seq <= end
        ).order_by(LogEvent.seq)
        yield list(stored.read(session, query, 2000))


def _state(session: Session, name: str) -> tuple[int, int, int] | None:
    row = session.execute(
        select(LogSummaryState.seq, LogSummaryState.mark, LogSummaryState.unreadable).where(
            LogSummaryState.name == name
        )
    ).first()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


def _heads(session: Session, types: tuple[str, ...]) -> tuple[int, int]:
    """(the last seq of an event of `types`, the last tamper mark): what the summary must
    reach. Other events (audit reads: one per view) never make a view catch up."""
    head = session.scalar(select(func.max(LogEvent.seq)).where(LogEvent.type.in_(types)))
    mark = session.scalar(select(func.max(LogTamperMark.id)))
    return int(head or 0), int(mark or 0)
