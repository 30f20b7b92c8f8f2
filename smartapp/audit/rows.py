"""Reading log events so that one damaged row never breaks a page, an export or verify.

The ORM decodes `at` and `data` while it loads a row: a `data` that is not JSON, or an `at` that
is not a time (possible on SQLite, whose columns take any text), raises in the middle of a
query and turns every page that reads the log into a 500. Here both columns are read raw and
decoded one row at a time; a row that does not decode comes back as a `StoredEvent` with
`defect` saying why, for the caller to name (verify), mark (console) or leave out (export).
PostgreSQL's json and timestamptz columns refuse such values, so there every row decodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, func, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from smartapp.audit.models import LogCheckpoint, LogEvent

_TABLE = LogEvent.__table__
COLUMNS = (
    _TABLE.c.seq,
    type_coerce(_TABLE.c.at, String).label("at"),
    _TABLE.c.type,
    _TABLE.c.user_ref,
    _TABLE.c.iss,
    _TABLE.c.patient_id,
    _TABLE.c.encounter_id,
    type_coerce(_TABLE.c.data, Text).label("data"),
    _TABLE.c.prev_hash,
    _TABLE.c.hash,
)


@dataclass
class StoredEvent:
    """One row of `log_event` as stored; `at` and `data` are None when `defect` is set.

    Has the attributes `canonical.event_hash` and the export read, like a `LogEvent`.
    """

    seq: int
    at: datetime | None
    type: str
    user_ref: str | None
    iss: str | None
    patient_id: str | None
    encounter_id: str | None
    data: dict | None
    prev_hash: str
    hash: str
    defect: str | None = None
    raw_at: Any = None
    raw_data: Any = None

    @property
    def broken(self) -> bool:
        return self.defect is not None


def select_events(*where: ColumnElement[bool]) -> Select:
    """The raw columns of the events matching `where` (no ORDER BY: the caller says)."""
    return select(*COLUMNS).where(*where)


def read(session: Session, query: Select, yield_per: int = 1000) -> Iterator[StoredEvent]:
    """Run `query` (built on `select_events`) and decode its rows one at a time."""
    dialect = session.get_bind().dialect
    rows = session.execute(query.execution_options(yield_per=yield_per))
    for row in rows:
        yield decode(row, dialect)


def get(session: Session, seq: int) -> StoredEvent | None:
    """The event at `seq`, decoded (damaged or not), or None."""
    return next(read(session, select_events(_TABLE.c.seq == seq)), None)


def decode(row: Any, dialect: Dialect) -> StoredEvent:
    """A raw row as a `StoredEvent`; a value that does not decode sets `defect`."""
    problems = []
    at = _decode(_TABLE.c.at, row.at, dialect)
    if not isinstance(at, datetime):
        problems.append(f"its time ({_shown(row.at)}) is not a date and time")
        at = None
    data = _decode(_TABLE.c.data, row.data, dialect)
    if not isinstance(data, dict):
        problems.append(
            "its data is not JSON" if data is _FAILED else "its data is not a JSON object"
        )
        data = None
    return StoredEvent(
        seq=row.seq,
        at=at,
        type=row.type,
        user_ref=row.user_ref,
        iss=row.iss,
        patient_id=row.patient_id,
        encounter_id=row.encounter_id,
        data=data,
        prev_hash=row.prev_hash,
        hash=row.hash,
        defect="; ".join(problems) or None,
        raw_at=row.at,
        raw_data=row.data,
    )


@dataclass
class StoredCheckpoint:
    """One row of `log_checkpoint` as stored (the attributes of a `LogCheckpoint`); `at` is
    None when `defect` is set."""

    seq: int
    hash: str
    at: datetime | None
    prev_seq: int
    key_id: str
    signature: str
    defect: str | None = None


_CHECKPOINTS = LogCheckpoint.__table__


def checkpoint_count(session: Session) -> int:
    """How many checkpoints the database holds."""
    return int(session.scalar(select(func.count()).select_from(_CHECKPOINTS)) or 0)


def checkpoints(
    session: Session, after: int = 0, limit: int | None = None
) -> list[StoredCheckpoint]:
    """Every checkpoint after seq `after` by seq, each decoded on its own (a damaged time is a
    `defect`)."""
    dialect = session.get_bind().dialect
    query = (
        select(
            _CHECKPOINTS.c.seq,
            _CHECKPOINTS.c.hash,
            type_coerce(_CHECKPOINTS.c.at, String).label("at"),
            _CHECKPOINTS.c.prev_seq,
            _CHECKPOINTS.c.key_id,
            _CHECKPOINTS.c.signature,
        )
        .where(_CHECKPOINTS.c.seq > after)
        .order_by(_CHECKPOINTS.c.seq)
    )
    found = []
    for row in session.execute(query):
        at = _decode(_CHECKPOINTS.c.at, row.at, dialect)
        found.append(
            StoredCheckpoint(
                seq=row.seq,
                hash=row.hash,
                at=at if isinstance(at, datetime) else None,
                prev_seq=row.prev_seq or 0,
                key_id=row.key_id,
                signature=row.signature,
                defect=None
                if isinstance(at, datetime)
                else f"its time ({_shown(row.at)}) is not a date and time",
            )
        )
    return found


_FAILED = object()


def _decode(column: Any, value: Any, dialect: Dialect) -> Any:
    """The value as the column's type would load it; `_FAILED` where that raises."""
    if value is None or not isinstance(value, str | bytes):
        return value  # the driver decoded it already (PostgreSQL)
    processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
    if processor is None:
        return value
    try:
        return processor(value)
    except (ValueError, TypeError):  # json.JSONDecodeError is a ValueError
        return _FAILED


def _shown(value: Any) -> str:
    """A stored value, quoted and cut short, for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
