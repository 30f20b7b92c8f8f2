"""The log read fast, for verify and export at millions of events (issue 15).

Rows come as plain tuples from a server-side cursor (`yield_per`), never as ORM objects, with
the time and the data as the database's text: the time is put in the canonical form by string
slicing (SQLite) or by the database (PostgreSQL's `to_char`), the data is parsed once with
orjson and the hashed document is serialised once (`orjson`, keys sorted).

That serialisation is only a candidate for the canonical form of `canonical` (orjson and the
standard library agree on everything the app writes, but not on, say, how to print 1e16): a
row's candidate is used only where its SHA-256 is the row's stored hash, i.e. where it is byte
for byte what the chain hashed. Any other row (a float printed differently, a damaged row, a
tampered one) goes to the exact, slower path (`smartapp.audit.rows` and `canonical`), which
also names what is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    Text,
    cast,
    func,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from smartapp.audit.canonical import VERSION
from smartapp.audit.models import LogEvent

_TABLE = LogEvent.__table__
_SORTED = orjson.OPT_SORT_KEYS
# PostgreSQL renders the canonical time itself (UTC, six digits, Z).
_PG_TIME = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def columns(dialect: str) -> tuple[Any, ...]:
    """seq, time (text), type, user, iss, patient, encounter, data (text), prev_hash, hash."""
    if dialect == "postgresql":
        at = func.to_char(func.timezone("UTC", _TABLE.c.at), _PG_TIME).label("at")
        data = cast(_TABLE.c.data, Text).label("data")
    else:
        at = type_coerce(_TABLE.c.at, String).label("at")
        data = type_coerce(_TABLE.c.data, Text).label("data")
    return (
        _TABLE.c.seq,
        at,
        _TABLE.c.type,
        _TABLE.c.user_ref,
        _TABLE.c.iss,
        _TABLE.c.patient_id,
        _TABLE.c.encounter_id,
        data,
        _TABLE.c.prev_hash,
        _TABLE.c.hash,
    )


def query(dialect: str, *where: ColumnElement[bool]) -> Select:
    """Raw rows in chain order."""
    return select(*columns(dialect)).where(*where).order_by(_TABLE.c.seq)


def stream(connection: Connection, statement: Select, chunk: int = 5000) -> Iterator[Any]:
    """The statement's rows as tuples, read `chunk` at a time (server-side on PostgreSQL)."""
    # Options on the statement: on the connection they would stay (it is the session's).
    result = connection.execute(statement.execution_options(stream_results=True, yield_per=chunk))
    for partition in result.partitions():
        yield from partition


class Fast(NamedTuple):
    """A row whose candidate canonical bytes hash to its stored hash: proven as stored (a
    tuple: one is made per row of an export)."""

    time: str  # canonical UTC time
    data: dict
    canonical: bytes
    body: bytes  # the data's canonical bytes (sorted keys), as they appear in `canonical`


def canonical_time(time: Any) -> str | None:
    """A row's stored time (`columns`) in the canonical form (`canonical.format_time`'s),
    else None: the row is not proven."""
    if type(time) is not str:
        return None
    if len(time) == 26 and time[10] == " " and time[19] == ".":  # SQLite's storage format
        return f"{time[:10]}T{time[11:]}Z"
    if len(time) == 27 and time[10] == "T" and time[26] == "Z":  # PostgreSQL's to_char
        return time
    return None


def proven(row: Any) -> Fast | None:
    """The row's canonical document if its candidate hashes to the row's hash, else None.

    The data is serialised once (keys sorted) and put into the document as it is (an
    `orjson.Fragment`), so its canonical bytes are at hand for the CSV export too."""
    time = canonical_time(row[1])
    if time is None:
        return None
    try:
        data = orjson.loads(row[7])
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        body = orjson.dumps(data, option=_SORTED)
        # The document's keys written in sorted order (the canonical form's), the data as made.
        canonical = orjson.dumps(
            {
                "at": time,
                "data": orjson.Fragment(body),
                "encounter": row[6],
                "iss": row[4],
                "patient": row[5],
                "prev_hash": row[8],
                "seq": row[0],
                "type": row[2],
                "user": row[3],
                "v": VERSION,
            }
        )
    except TypeError:
        return None
    if hashlib.sha256(canonical).hexdigest() != row[9]:
        return None
    return Fast(time, data, canonical, body)


def rows(
    session: Session,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]],
) -> Iterator[Any]:
    """The raw rows (`query`) of the events with start <= time < end and the `where`
    conditions, in chain order, streamed: each to be `proven`, or read again the exact way
    (`smartapp.audit.rows.get`) where it does not prove itself."""
    connection = session.connection()
    return stream(connection, query(connection.dialect.name, *in_range(start, end, where)))


def in_range(
    start: datetime | None, end: datetime | None, where: Sequence[ColumnElement[bool]] = ()
) -> list[ColumnElement[bool]]:
    """The conditions of the events an export takes: start <= time < end, and `where`."""
    conditions = list(where)
    if start is not None:
        conditions.append(LogEvent.at >= start)
    if end is not None:
        conditions.append(LogEvent.at < end)
    return conditions
