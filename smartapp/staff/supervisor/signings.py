"""The handoffs signed in the supervisor's days (`figures.signed_handoffs`) read without
decoding every handoff event of those days (issue 15: 1.4-3.7 s per view at 100k events in 14
days, most of it decoding the data of contacts and status updates the figures never use).

The database gives back only the events that can count, along the log's (type, time) index:
the Signs, and the events that can take a handoff off the queue (a coach's accept, a
reassignment, a closed or partner-accepted Task status); and of each event's data, the few
values the figures read (the referral, a Sign's decisions, the Task status, the name of who
took it) as one small JSON array, which both databases copy from the stored text, so they
read back as the whole data read them. A row SQLite cannot read as JSON (it keeps any text) is
read whole and decoded here as before; a damaged row is left out as before. One difference a
hand-edited row alone could make: of a key written twice in one object, SQLite picks the first
value where Python (and PostgreSQL) keep the last; Handoff never writes one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Select,
    String,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent
from smartapp.staff import caseload
from smartapp.staff.supervisor import figures

#: The events that count whatever their data says: a Sign, a coach's accept, a reassignment.
ALWAYS_READ = ("decision", *figures.OWNER_EVENTS)
#: The Task statuses with which any other handoff event takes a handoff off the queue.
TAKING_STATUSES = (*figures.CLOSED, "accepted")
#: The values of an event's data the figures read.
KEYS = ("referral", "decisions", "user_name", "to_name", "task_status")
_BATCH = 500  # seqs per query of rows decoded here


def events(session: Session, since: datetime) -> Iterator[dict]:
    """The events since `since` that `figures.signed_handoffs` can count (any other handoff
    event counts for nothing in it), as the log read whole gave them but for their data: the
    values of it the figures read (None for one missing, as `dict.get` gives it)."""
    dialect = session.get_bind().dialect
    column = LogEvent.__table__.c.at
    at_processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
    decode_here: list[int] = []
    for seq, stored_at, type_, readable, picked in session.execute(_query(dialect, since)):
        if not readable:
            decode_here.append(seq)
            continue
        at = _time(stored_at, at_processor)
        if at is not None:  # else a damaged time: left out, as before
            data = dict(zip(KEYS, picked, strict=True))
            yield {"seq": seq, "at": caseload.aware(at), "type": type_, "data": data}
    yield from _decoded(session, decode_here)


def _query(dialect: Dialect, since: datetime) -> Select:
    """The handoff events since `since` that are Signs or can take a handoff, with the values
    the figures read picked out as one JSON array (NULL where the row is not JSON the database
    reads): one small document to decode per event instead of its whole data."""
    readable: ColumnElement[Any]
    values: ColumnElement[Any]
    if dialect.name == "sqlite":  # any text is kept; json_extract raises on one not JSON
        readable = func.json_valid(LogEvent.data) == 1
        paths = [f'$."{key}"' for key in KEYS]
        values = case((readable, func.json_extract(LogEvent.data, *paths)))
        status = case((readable, LogEvent.data["task_status"].as_string()))
    else:  # PostgreSQL's json column refuses what is not JSON
        readable = literal(True)
        values = func.json_build_array(*(LogEvent.data[key] for key in KEYS))
        status = LogEvent.data["task_status"].as_string()
    return select(
        LogEvent.seq,
        type_coerce(LogEvent.at, String).label("at"),
        LogEvent.type,
        readable.label("readable"),
        type_coerce(values, JSON).label("picked"),
    ).where(
        LogEvent.type.in_(figures.TYPES),
        LogEvent.at >= since.astimezone(UTC),
        or_(LogEvent.type.in_(ALWAYS_READ), status.in_(TAKING_STATUSES), ~readable),
    )


def _time(value: Any, processor: Any) -> datetime | None:
    """The stored time as the column loads it; None where it is not a time (SQLite)."""
    if isinstance(value, str | bytes) and processor is not None:
        try:
            value = processor(value)
        except (ValueError, TypeError):
            return None
    return value if isinstance(value, datetime) else None


def _decoded(session: Session, seqs: list[int]) -> Iterator[dict]:
    """The events at `seqs` read whole and decoded, as the page read every one before
    (a damaged row left out)."""
    for first in range(0, len(seqs), _BATCH):
        query = stored.select_events(LogEvent.seq.in_(seqs[first : first + _BATCH]))
        for event in stored.read(session, query):
            if event.broken or event.at is None:
                continue
            yield {
                "seq": event.seq,
                "at": caseload.aware(event.at),
                "type": event.type,
                "data": event.data or {},
            }
