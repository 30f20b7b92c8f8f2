"""The console's kind and outcome filters at any log size (issue 15): each event's kinds and
outcomes are read from its data once, when it is first searched for, and kept as tags beside
the log (`log_event_tag`), so a filtered page reads one range of an index instead of the data
of every candidate event (at 1M events: seconds per view before).

Which tags an event gets (`event_tags`) mirrors `Search.matches`, the reference the tests hold
it to: a shown suggestion's kind; a decision's kind, its outcome (accepted or declined) and the
two together, for each decision; a write attempt's outcome; a held write. Tags are brought up
to the log's head as every summary kept beside the log is (`smartapp.audit.beside`): only the
events after the last one tagged, and all of them again after a tamper mark.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from smartapp.audit import beside
from smartapp.audit.models import LogEventTag
from smartapp.db import Database

NAME = "console-tags"
# The event types whose data a kind or an outcome is read from (`Search.matches`).
TAGGED_TYPES = ("suggestions-shown", "decision", "write-attempt", "write-held")
_INSERT_BATCH = 2_000  # tags per INSERT
_MAX_KIND = 100  # the longest kind a search names (`Search.from_args`)


def kind_tag(kind: str) -> str:
    return f"k:{kind}"


def outcome_tag(outcome: str) -> str:
    return f"o:{outcome}"


def both_tag(kind: str, outcome: str) -> str:
    return f"ko:{kind}|{outcome}"


def search_tag(kind: str, outcome: str) -> str:
    """The tag the events a kind and/or outcome filter matches carry."""
    if kind and outcome:
        return both_tag(kind, outcome)
    return kind_tag(kind) if kind else outcome_tag(outcome)


def event_tags(type_: str, data: Any) -> set[str]:
    """The tags of one event, from its type and data (unreadable data: none, except for a
    held write, which `Search.matches` finds by its type alone)."""
    data = data if isinstance(data, dict) else {}
    found: set[str] = set()
    if type_ == "suggestions-shown":
        for suggestion in _dicts(data.get("suggestions")):
            kind = suggestion.get("kind")
            if _searchable(kind):
                found.add(kind_tag(kind))
    elif type_ == "decision":
        for decision in _dicts(data.get("decisions")):
            outcome = "accepted" if decision.get("accepted") else "declined"
            found.add(outcome_tag(outcome))
            kind = decision.get("kind")
            if _searchable(kind):
                found.update((kind_tag(kind), both_tag(kind, outcome)))
    elif type_ == "write-attempt":
        outcome = data.get("outcome")
        if _searchable(outcome):
            found.add(outcome_tag(outcome))
    elif type_ == "write-held":
        found.add(outcome_tag("held"))
    return found


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _searchable(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= _MAX_KIND


def bring_up_to_date(db: Database, unit: int = beside.UNIT_EVENTS) -> None:
    """Tag the events appended since the last time, in units of work of their own."""
    beside.bring_up_to_date(db, SUMMARY, unit)


def catch_up(session: Session, limit: int | None = None) -> bool:
    """Tag the events after the last one tagged (all of them again after a tamper mark), at
    most `limit` in this unit of work; whether the tags now reach the log's head."""
    return beside.catch_up(session, SUMMARY, limit)[0]


def _tag(session: Session, after: int, upto: int) -> int:
    """Insert the tags of the events after..upto (a damaged row gets the tags its type alone
    gives: none is left out)."""
    for events in beside.ranges(session, TAGGED_TYPES, after, upto):
        rows = [
            {"tag": tag, "seq": event.seq}
            for event in events
            for tag in event_tags(event.type, event.data)
        ]
        for first in range(0, len(rows), _INSERT_BATCH):
            session.execute(insert(LogEventTag), rows[first : first + _INSERT_BATCH])
    return 0


def _clear(session: Session) -> None:
    session.execute(delete(LogEventTag))


SUMMARY = beside.Summary(NAME, TAGGED_TYPES, _clear, _tag)
