"""Users' display names kept beside the log (issue 15): `log_user_name`, brought up to date
from the events appended since (launches and staff sign-ins only), so that the console names
users without reading every launch of the log on each page.

The name kept is the one `log.user_names` always gave: the last one recorded for the user in
seq order; damaged rows are skipped. A row of the log changed or deleted (a tamper mark) makes
the names be read again from the whole log.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from smartapp.audit import beside
from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent, LogUserName

NAME = "user-names"
NAMED_TYPES = ("launch", "staff-sign-in")
# The users the console's user filter offers: who launched, decided or signed in (kept with an
# empty name until an identity event names them).
USER_TYPES = ("launch", "decision", "staff-sign-in")


def bring_up_to_date(session: Session) -> None:
    """Read the naming events since the last time (all of them after a tamper mark). Takes the
    chain lock only when there is something to read."""
    beside.catch_up(session, SUMMARY)


def _read(session: Session, after: int, last: int) -> int:
    """Keep the names the events after..last give (damaged rows are skipped, not counted)."""
    found: dict[str, tuple[str, int]] = {}
    query = stored.select_events(
        LogEvent.type.in_(USER_TYPES),
        LogEvent.user_ref.is_not(None),
        LogEvent.seq > after,
        LogEvent.seq <= last,
    ).order_by(LogEvent.seq)
    for event in stored.read(session, query, 2000):
        if not event.user_ref:
            continue
        name = (event.data or {}).get("user_name") if event.type in NAMED_TYPES else None
        if isinstance(name, str) and name:
            found[event.user_ref] = (name, event.seq)
        else:
            found.setdefault(event.user_ref, ("", 0))
    _keep(session, found)
    return 0


def _clear(session: Session) -> None:
    session.execute(delete(LogUserName))


SUMMARY = beside.Summary(NAME, USER_TYPES, _clear, _read)


def _keep(session: Session, found: dict[str, tuple[str, int]]) -> None:
    if not found:
        return
    known = set(
        session.scalars(select(LogUserName.user_ref).where(LogUserName.user_ref.in_(list(found))))
    )
    fresh = [
        {"user_ref": ref, "name": name, "seq": seq}
        for ref, (name, seq) in found.items()
        if ref not in known
    ]
    if fresh:
        session.execute(insert(LogUserName), fresh)
    for ref in known:
        name, seq = found[ref]
        if name:  # a user seen again without a name keeps the name they had
            session.execute(
                update(LogUserName).where(LogUserName.user_ref == ref).values(name=name, seq=seq)
            )


def user_names(session: Session) -> dict[str, str]:
    """Each user's display name by reference (brought up to date first)."""
    bring_up_to_date(session)
    query = select(LogUserName.user_ref, LogUserName.name).where(LogUserName.name != "")
    return {user_ref: name for user_ref, name in session.execute(query)}


def known_users(session: Session, limit: int) -> list[str]:
    """The first `limit` users (by reference) who launched, decided or signed in."""
    bring_up_to_date(session)
    query = select(LogUserName.user_ref).order_by(LogUserName.user_ref).limit(limit)
    return list(session.scalars(query))
