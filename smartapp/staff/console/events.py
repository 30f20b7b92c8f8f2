"""The console's event pages as data (Flask-free): one page of a log search with the choices
its form offers, and everything about one event, its hashes and its place in the chain."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.audit import rows as stored
from smartapp.audit.canonical import GENESIS, event_hash, format_time
from smartapp.audit.models import LogEvent
from smartapp.audit.names import known_users
from smartapp.audit.rows import StoredEvent
from smartapp.audit.verify import Report
from smartapp.staff.console.chain_status import verified_through
from smartapp.staff.console.search import Search, run_search
from smartapp.staff.console.summary import shown_time, summary

# The event types whose users the user filter offers.
USER_TYPES = ("launch", "decision", "staff-sign-in")


@dataclass
class SearchPage:
    """One page of matching events as table rows, how many match, and the form's choices."""

    rows: list[dict]
    total: int
    types: list[str]
    users: list[dict]


def event_row(event: StoredEvent, names: Mapping[str, str]) -> dict:
    """An event as a row of the search table."""
    return {
        "seq": event.seq,
        "broken": event.broken,
        "time": shown_time(event.at),
        "type": event.type,
        "user": event.user_ref or "",
        "user_name": names.get(event.user_ref or "", ""),
        "patient": event.patient_id or "",
        "encounter": event.encounter_id or "",
        "summary": summary(event),
    }


def search_page(
    session: Session, search: Search, page_size: int, verified: Report | None = None
) -> SearchPage:
    """The page of events `search` asks for, with the event types and users to filter by.

    `verified`: this view's verification of the chain; when it passed, the events it verified
    are counted from its head (`search.count_all`) instead of one by one."""
    names = referral_log.user_names(session)
    whole_through = verified.head_seq if verified is not None and verified.ok else None
    rows, total = run_search(session, search, page_size, names, whole_through)
    types = event_types(session)
    users = known_users(session, 500)
    return SearchPage(
        rows=[event_row(e, names) for e in rows],
        total=total,
        types=types,
        users=[{"ref": u, "name": names.get(u, "")} for u in users if u],
    )


def event_types(session: Session) -> list[str]:
    """The event types in the log, read as a loose index scan (one index seek per type, not a
    scan of a million rows)."""
    found: list[str] = []
    current = session.scalar(select(func.min(LogEvent.type)))
    while current is not None:
        found.append(current)
        current = session.scalar(select(func.min(LogEvent.type)).where(LogEvent.type > current))
    return found


def shown_data(event: StoredEvent) -> str:
    """The event's data as indented JSON; for a damaged row, what the database holds."""
    if event.broken:
        return str(event.raw_data)
    return json.dumps(event.data, indent=2, sort_keys=True, ensure_ascii=False)


def event_detail(session: Session, event: StoredEvent, report: Report) -> dict:
    """Every column of one event, its data, its hashes, whether its hash and link hold, whether
    the chain verifies up to it and which checkpoint signs it."""
    seq = event.seq
    names = referral_log.user_names(session)
    previous = session.scalar(select(LogEvent.hash).where(LogEvent.seq == seq - 1))
    expected_prev = previous if seq > 1 else GENESIS
    checkpoint = next(iter(stored.checkpoints(session, seq - 1, limit=1)), None)
    return {
        **event_row(event, names),
        "at": format_time(event.at) if event.at else "",
        "iss": event.iss or "",
        "data": shown_data(event),
        "defect": event.defect,
        "hash": event.hash,
        "prev_hash": event.prev_hash,
        "hash_ok": not event.broken and event_hash(event) == event.hash,
        "link_ok": event.prev_hash == expected_prev,
        "verified": verified_through(report, seq),
        "checkpoint": checkpoint.seq if checkpoint else None,
        "signed": checkpoint is not None and report.last_checkpoint >= checkpoint.seq,
    }


def has_event(session: Session, seq: int) -> bool:
    """Whether the log holds event `seq` (for the "next" link)."""
    return session.scalar(select(LogEvent.seq).where(LogEvent.seq == seq)) is not None
