"""The auditor's search of the referral log: the filter read from a query string, and one page
of matching events (Flask-free: a SQLAlchemy session in, stored events out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent, LogEventTag
from smartapp.audit.rows import StoredEvent
from smartapp.staff.console import tags

PAGE_SIZE = 50
MAX_PAGE = 1_000_000
OUTCOMES = ("accepted", "declined", "written", "queued", "failed", "held")
# The event types an outcome can be found in.
OUTCOME_TYPES = {
    "accepted": ("decision",),
    "declined": ("decision",),
    "written": ("write-attempt",),
    "queued": ("write-attempt",),
    "failed": ("write-attempt",),
    "held": ("write-held",),
}
KIND_TYPES = ("suggestions-shown", "decision")


@dataclass
class Search:
    """The auditor's filter, read from the query string; `errors` says what was ignored."""

    start: date | None = None
    end: date | None = None  # inclusive
    user: str = ""
    patient: str = ""
    kind: str = ""
    outcome: str = ""
    type: str = ""
    page: int = 1
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: Any) -> Search:
        search = cls()
        search.start = search._date(args.get("from", ""), "From")
        search.end = search._date(args.get("to", ""), "To")
        if search.start and search.end and search.end < search.start:
            search.errors.append("The end date is before the start date: both were ignored.")
            search.start = search.end = None
        search.user = args.get("user", "").strip()[:500]
        search.patient = args.get("patient", "").strip()[:200]
        search.kind = args.get("kind", "").strip()[:100]
        search.type = args.get("type", "").strip()[:50]
        outcome = args.get("outcome", "").strip()
        if outcome and outcome not in OUTCOMES:
            search.errors.append(f"Unknown outcome {outcome!r}: ignored.")
            outcome = ""
        search.outcome = outcome
        try:
            search.page = min(max(1, int(args.get("page", "1"))), MAX_PAGE)
        except ValueError:
            search.page = 1
        return search

    def _date(self, text: str, label: str) -> date | None:
        text = text.strip()
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.errors.append(f"{label}: {text!r} is not a date (YYYY-MM-DD): ignored.")
            return None

    @property
    def start_at(self) -> datetime | None:
        """The first instant of the range (UTC)."""
        return _midnight(self.start) if self.start else None

    @property
    def end_at(self) -> datetime | None:
        """The instant after the range (the end date is inclusive); None: open."""
        if self.end is None or self.end == date.max:
            return None
        return _midnight(self.end + timedelta(days=1))

    def args(self, **changes: Any) -> dict[str, str]:
        """The filter as query arguments (empty ones left out), with `changes` applied."""
        values = {
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
            "user": self.user,
            "patient": self.patient,
            "kind": self.kind,
            "outcome": self.outcome,
            "type": self.type,
            "page": str(self.page) if self.page > 1 else "",
        }
        values.update({k: str(v) if v else "" for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}

    def describe(self) -> str:
        """The query in words, for the `audit-read` event."""
        parts = [f"{k}={v}" for k, v in self.args().items() if k != "page"]
        return f"log search ({', '.join(parts) or 'all events'}), page {self.page}"

    @property
    def types(self) -> tuple[str, ...] | None:
        """The event types this filter can match (None: any)."""
        allowed: set[str] | None = None
        if self.outcome:
            allowed = set(OUTCOME_TYPES[self.outcome])
        if self.kind:
            allowed = set(KIND_TYPES) if allowed is None else allowed & set(KIND_TYPES)
        if self.type:
            allowed = {self.type} if allowed is None else allowed & {self.type}
        return None if allowed is None else tuple(sorted(allowed))

    def conditions(self, names: Mapping[str, str] | None = None) -> list[ColumnElement[bool]]:
        """The filter's column conditions, in SQL; kind and outcome are read from `data`.

        The user filter finds a user by id or by name (`names`: reference -> display name, from
        `referral_log.user_names`), any part of either, letter case aside.
        """
        found: list[ColumnElement[bool]] = []
        if self.start_at:
            found.append(LogEvent.at >= self.start_at)
        if self.end_at:
            found.append(LogEvent.at < self.end_at)
        if self.user:
            wanted = self.user.casefold()
            named = sorted(ref for ref, name in (names or {}).items() if wanted in name.casefold())
            by_id = func.lower(LogEvent.user_ref).contains(self.user.lower(), autoescape=True)
            found.append(or_(by_id, LogEvent.user_ref.in_(named)) if named else by_id)
        if self.patient:
            found.append(LogEvent.patient_id == self.patient)
        if self.types is not None:
            found.append(LogEvent.type.in_(self.types))
        return found

    def query(self, names: Mapping[str, str] | None = None) -> Select:
        """The matching rows, read raw (`smartapp.audit.rows`): a damaged row is shown, marked."""
        return stored.select_events(*self.conditions(names))

    @property
    def reads_data(self) -> bool:
        """Whether matching needs each event's data (kind, outcome): `matches`."""
        return bool(self.kind or self.outcome)

    def filter_words(self) -> str:
        """The filter in words (dates aside), for the export's log entry; "" for none."""
        return ", ".join(
            f"{k}={v}" for k, v in self.args().items() if k not in ("page", "from", "to")
        )

    def matches(self, event: StoredEvent) -> bool:
        """Kind and outcome, from the event's data (only asked when one of them is set); an
        event whose data cannot be read matches neither."""
        data = event.data or {}
        if event.type == "suggestions-shown":
            return not self.outcome and any(
                s.get("kind") == self.kind for s in data.get("suggestions") or []
            )
        if event.type == "decision":
            return any(
                (not self.kind or d.get("kind") == self.kind)
                and (not self.outcome or bool(d.get("accepted")) == (self.outcome == "accepted"))
                for d in data.get("decisions") or []
            )
        if event.type == "write-attempt":
            return not self.kind and data.get("outcome") == self.outcome
        if event.type == "write-held":
            return not self.kind and self.outcome == "held"
        return False


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def run_search(
    session: Session,
    search: Search,
    page_size: int,
    names: Mapping[str, str] | None = None,
    whole_through: int | None = None,
) -> tuple[list[StoredEvent], int]:
    """One page of matching events, newest first, and how many match in all.

    Column filters run in SQL with LIMIT/OFFSET; a kind or outcome filter reads the tags kept
    beside the log (`tags`: brought up to date first), never each event's data.
    `whole_through`: see `count_all`.
    """
    offset = (search.page - 1) * page_size
    if search.reads_data:
        return _tagged(session, search, page_size, offset, names)
    query = search.query(names)
    conditions = search.conditions(names)
    if conditions or whole_through is None:
        counted = select(func.count()).select_from(LogEvent).where(*conditions)
        total = session.scalar(counted) or 0
    else:
        total = count_all(session, whole_through)
    rows = stored.read(session, query.order_by(LogEvent.seq.desc()).offset(offset).limit(page_size))
    return list(rows), total


def _tagged(
    session: Session,
    search: Search,
    page_size: int,
    offset: int,
    names: Mapping[str, str] | None,
) -> tuple[list[StoredEvent], int]:
    """`run_search` for a kind or outcome filter: the events carrying its tag, along the tag
    index newest first; counted on the index alone unless another filter narrows them."""
    if search.types == ():  # a type that cannot hold the kind or outcome asked for
        return [], 0
    tags.catch_up(session)
    tag = tags.search_tag(search.kind, search.outcome)
    tagged = LogEventTag.tag == tag
    # The type condition follows from the tag, unless a type filter narrows it further.
    others = replace(search, kind="", outcome="").conditions(names)
    joined = stored.select_events(*others, tagged).join_from(
        LogEvent, LogEventTag, LogEventTag.seq == LogEvent.seq
    )
    if others:
        counted = select(func.count()).select_from(joined.subquery())
    else:
        counted = select(func.count()).select_from(LogEventTag).where(tagged)
    total = session.scalar(counted) or 0
    page = joined.order_by(LogEventTag.seq.desc()).offset(offset).limit(page_size)
    return list(stored.read(session, page)), total


def count_all(session: Session, whole_through: int) -> int:
    """How many events the log holds, when it is known to hold exactly the events #1 to
    #`whole_through` and whatever follows (a chain verified through that event, unchanged since:
    `smartapp.audit.incremental`): those plus the rows outside them, counted on the primary key.

    An exact count without reading a million index entries (a COUNT(*) over the whole table
    costs 100 ms and more on PostgreSQL at 1M events, growing with the log)."""
    # Two ranges of the primary key, apart (SQLite scans the whole table for their OR).
    after = select(func.count()).where(LogEvent.seq > whole_through).scalar_subquery()
    before = select(func.count()).where(LogEvent.seq < 1).scalar_subquery()
    return whole_through + int(session.scalar(select(after + before)) or 0)
