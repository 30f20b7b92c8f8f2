"""The supervisor's caseload series at any log size (issue 15): each coach's holding of a
handoff is kept beside the log (`log_handoff_holding`, brought up to date as every summary
there is: `smartapp.audit.beside`), so a view reads the holdings of its days instead of every
handoff event the log ever held (2 s at 100k events, growing with the log).

A holding starts with the event that gives a coach the handoff (a coach's accept whose Task is
not closed, a reassignment) and ends with the next one that gives it to someone else or closes
its Task: exactly the owner changes `figures.caseload_over_time` applies. A view turns the
holdings that overlap its days back into one owner change per event (`changes`) and hands
them to that same function, so the figures are the same by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from smartapp.audit import beside
from smartapp.audit.models import LogHandoffHolding
from smartapp.db import Database
from smartapp.staff.caseload import aware
from smartapp.staff.supervisor import figures

NAME = "handoff-holdings"
_TABLE: Table = LogHandoffHolding.__table__  # type: ignore[assignment]
_MAX_REFERRAL = 64


def bring_up_to_date(db: Database, unit: int = beside.UNIT_EVENTS) -> int:
    """Take the events appended since the last time into the holdings, in units of work of
    their own; how many damaged handoff events the log holds (left out, as always)."""
    return beside.bring_up_to_date(db, SUMMARY, unit)


def holding_change(event: Any) -> tuple[str, str | None, str, bool] | None:
    """What one stored event does to who holds its handoff: (referral, the new holder's
    reference or None, the name it gives, whether it closes the handoff), or None."""
    data = event.data or {}
    referral = data.get("referral")
    if not referral or not isinstance(referral, str) or len(referral) > _MAX_REFERRAL:
        return None
    closes = data.get("task_status") in figures.CLOSED
    if event.type == "coach-accept" and data.get("task_status", "accepted") not in figures.CLOSED:
        return referral, figures.coach_key(event.user_ref), _name(data.get("user_name")), closes
    if event.type == "handoff-reassign" and data.get("to"):
        return referral, figures.coach_key(data["to"]), _name(data.get("to_name")), closes
    return (referral, None, "", True) if closes else None


def _name(value: Any) -> str:
    return value[:200] if isinstance(value, str) else ""


def _add(session: Session, after: int, upto: int) -> int:
    """Take the events after..upto into the holdings; returns the damaged ones left out."""
    open_now = {
        row.referral: row.start_seq
        for row in session.execute(
            select(_TABLE.c.referral, _TABLE.c.start_seq).where(_TABLE.c.end_seq.is_(None))
        )
    }
    broken = 0
    for events in beside.ranges(session, figures.TYPES, after, upto):
        new: dict[tuple[str, int], dict] = {}
        ended: list[dict] = []
        for event in events:
            if event.broken or event.at is None:
                broken += 1
                continue
            change = holding_change(event)
            if change is None:
                continue
            referral, holder, name, closes = change
            previous = open_now.pop(referral, None)
            if previous is not None:
                ending = {"end_seq": event.seq, "end_at": event.at}
                if (referral, previous) in new:
                    new[(referral, previous)] |= ending
                else:
                    ended.append({"r": referral, "s": previous} | ending)
            if holder is None:
                continue
            new[(referral, event.seq)] = {
                "referral": referral,
                "start_seq": event.seq,
                "start_at": event.at,
                "coach_ref": holder[:500],
                "coach_name": name,
                "end_seq": event.seq if closes else None,
                "end_at": event.at if closes else None,
            }
            if not closes:
                open_now[referral] = event.seq
        if new:
            session.execute(insert(LogHandoffHolding), list(new.values()))
        if ended:
            session.execute(
                update(_TABLE)
                .where(_TABLE.c.referral == bindparam("r"), _TABLE.c.start_seq == bindparam("s"))
                .values(end_seq=bindparam("end_seq"), end_at=bindparam("end_at")),
                ended,
            )
    return broken


def _clear(session: Session) -> None:
    session.execute(delete(LogHandoffHolding))


SUMMARY = beside.Summary(NAME, figures.TYPES, _clear, _add)


@dataclass(frozen=True)
class Holding:
    """A row of `log_handoff_holding`, its times aware (SQLite gives naive UTC back)."""

    referral: str
    start_seq: int
    start_at: datetime
    coach_ref: str
    coach_name: str
    end_seq: int | None
    end_at: datetime | None


def overlapping(session: Session, since: datetime) -> list[Holding]:
    """The holdings open at or after `since` (any that started before it included)."""
    ended = _TABLE.c.end_at >= since.astimezone(UTC)
    query = select(_TABLE).where(or_(_TABLE.c.end_seq.is_(None), ended))
    return [
        Holding(
            referral=row.referral,
            start_seq=row.start_seq,
            start_at=aware(row.start_at),
            coach_ref=row.coach_ref,
            coach_name=row.coach_name,
            end_seq=row.end_seq,
            end_at=aware(row.end_at) if row.end_at is not None else None,
        )
        for row in session.execute(query)
    ]


def latest_names(session: Session, refs: Iterable[str]) -> dict[str, str]:
    """The last name a holding gave each of these coaches (for one whose holdings in the days
    shown gave none)."""
    out: dict[str, str] = {}
    for ref in refs:
        query = (
            select(_TABLE.c.coach_name)
            .where(_TABLE.c.coach_ref == ref, _TABLE.c.coach_name != "")
            .order_by(_TABLE.c.start_seq.desc())
            .limit(1)
        )
        name = session.scalar(query)
        if name:
            out[ref] = name
    return out


def changes(holdings: Iterable[Holding]) -> list[dict]:
    """The holdings as the owner changes of their events, one per event and handoff, in the
    form `figures.caseload_over_time` reads: a coach's accept for a holding's start (a
    reassignment that closes the handoff at once for one that ended with the event that began
    it), a close for its end."""
    closed = figures.CLOSED[0]
    by_event: dict[tuple[int, str], dict] = {}
    for h in holdings:
        if h.end_seq is not None and h.end_at is not None and h.end_seq != h.start_seq:
            data = {"referral": h.referral, "task_status": closed}
            by_event[(h.end_seq, h.referral)] = _event(h.end_seq, h.end_at, "coach-close", data)
    for h in holdings:  # a holding that begins with the event that ended another replaces it
        if h.end_seq == h.start_seq:
            data = {"referral": h.referral, "to": h.coach_ref, "to_name": h.coach_name}
            event = _event(
                h.start_seq, h.start_at, "handoff-reassign", data | {"task_status": closed}
            )
        else:
            data = {"referral": h.referral, "user_name": h.coach_name, "task_status": "accepted"}
            event = _event(h.start_seq, h.start_at, "coach-accept", data, h.coach_ref)
        by_event[(h.start_seq, h.referral)] = event
    return sorted(by_event.values(), key=lambda e: (e["at"], e["seq"]))


def _event(seq: int, at: datetime, type_: str, data: dict, user_ref: str | None = None) -> dict:
    return {"seq": seq, "at": at, "type": type_, "user_ref": user_ref, "data": data}
