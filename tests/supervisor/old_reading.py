"""The supervisor page's former reading of the log, kept as the tests' reference: every
handoff event (of `figures.TYPES`, from `since` on) read whole and decoded, as dicts; damaged
rows are left out (their seqs in `broken`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent
from smartapp.staff import caseload
from smartapp.staff.supervisor import figures


def load_events(
    session: Session, broken: list[int], since: datetime | None = None
) -> Iterator[dict]:
    """The handoff events of the log (from `since` on) as dicts; damaged rows are left out
    (seqs in `broken`)."""
    where: list[ColumnElement[bool]] = [LogEvent.type.in_(figures.TYPES)]
    if since is not None:
        where.append(LogEvent.at >= since.astimezone(UTC))
    query = stored.select_events(*where).order_by(LogEvent.seq)
    for event in stored.read(session, query, 2000):
        if event.broken or event.at is None:
            broken.append(event.seq)
            continue
        yield {
            "seq": event.seq,
            "at": caseload.aware(event.at),
            "type": event.type,
            "user_ref": event.user_ref,
            "data": event.data or {},
        }
