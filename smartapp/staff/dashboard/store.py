"""The dashboard's visits kept beside the log (issue 15): the dashboard reads visits, never the
whole log, on each view.

`log_visit_summary` holds one row per visit (the `Visit` of `visits`, its joined state as JSON)
and `log_summary_state` the last event joined. `bring_up_to_date` joins only the events after
it, with the very `_Joiner` the dashboard always used (so the figures are the same), under the
chain lock (no append races it; a view that finds nothing new takes no lock). Events are joined
in seq order, which is time order: the chain stamps each event under its lock.

A row of the log changed or deleted (a tamper mark, see `smartapp.audit.incremental`) makes the
summaries be rebuilt from the whole log on the next view: they must never keep what the log no
longer says. Damaged rows are left out and counted, as before.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from smartapp.audit import beside
from smartapp.audit import rows as stored
from smartapp.audit.models import (
    LogEvent,
    LogVisitFigure,
    LogVisitSummary,
    LogVisitText,
)
from smartapp.db import Database
from smartapp.staff.dashboard.columns import figure_row
from smartapp.staff.dashboard.visits import LIFECYCLE_TYPES, Visit, VisitKey, _Joiner

NAME = "dashboard"
# Only these event types feed the dashboard (never audit reads, exports or sign-ins).
DASHBOARD_TYPES = (
    "suggestions-shown",
    "decision",
    "coach-contact",
    "coach-link",
    "coach-close",
    *LIFECYCLE_TYPES,  # the handoff's outcomes (issue 11)
)
CHUNK = 5000
log = logging.getLogger("handoff.dashboard")
_TABLE: Table = LogVisitSummary.__table__  # type: ignore[assignment]
# Each kept visit's figures as typed columns (`columns`), added up in SQL by `aggregate`.
FIGURES: Table = LogVisitFigure.__table__  # type: ignore[assignment]
TEXTS: Table = LogVisitText.__table__  # type: ignore[assignment]
_FIGURE_COLUMNS = tuple(c.name for c in FIGURES.columns if c.name not in ("id", "visit_key"))
_TIMES = (
    "first_shown",
    "arrival",
    "decided_at",
    "contact_at",
    "first_contact_at",
    "scheduled_at",
    "attended_at",
)


def visit_key(key: VisitKey) -> str:
    return hashlib.sha256(orjson.dumps(list(key))).hexdigest()


def dump(visit: Visit) -> str:
    """A visit as JSON (times ISO-8601, sets as sorted lists)."""
    state = dict(visit.__dict__)
    state["rules"] = sorted(visit.rules)
    for name in _TIMES:
        value = state[name]
        state[name] = value.isoformat() if value is not None else None
    return orjson.dumps(state).decode()


def load(text: str) -> Visit:
    state = orjson.loads(text)
    for name in _TIMES:
        if state[name] is not None:
            state[name] = datetime.fromisoformat(state[name])
    state["patient"] = tuple(state["patient"])
    state["rules"] = set(state["rules"])
    state["decisions"] = [tuple(d) for d in state["decisions"]]
    return Visit(**state)


class _Kept:
    """Visits by key and by referral, read from the summary table on first use, written back
    by `flush`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.reset()

    def reset(self) -> None:
        self.by_key: dict[str, Visit | None] = {}
        self.referrals: dict[str, str | None] = {}  # referral -> visit key
        self.referral_of: dict[str, str] = {}  # visit key -> referral named in this chunk
        self.keys: dict[int, str] = {}  # id(visit) -> its key
        self.dirty: set[str] = set()
        self.new: list[str] = []
        self.texts: dict[int, str] = {}  # digest -> text, named by the figure rows written

    def _load(self, where: Any) -> str | None:
        row = self.session.execute(
            select(_TABLE.c.visit_key, _TABLE.c.state)
            .where(where)
            .order_by(_TABLE.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        if self.by_key.get(row.visit_key) is None:
            visit = load(row.state)
            self.by_key[row.visit_key] = visit
            self.keys[id(visit)] = row.visit_key
        return row.visit_key

    def get(self, key: VisitKey) -> Visit | None:
        digest = visit_key(key)
        if digest not in self.by_key and self._load(_TABLE.c.visit_key == digest) is None:
            self.by_key[digest] = None
        found = self.by_key[digest]
        if found is not None:
            self.dirty.add(digest)
        return found

    def put(self, key: VisitKey, visit: Visit) -> None:
        digest = visit_key(key)
        self.by_key[digest] = visit
        self.keys[id(visit)] = digest
        self.new.append(digest)

    def of_referral(self, referral: str) -> Visit | None:
        if referral not in self.referrals:
            self.referrals[referral] = self._load(_TABLE.c.referral == referral)
        digest = self.referrals[referral]
        if digest is None:
            return None
        self.dirty.add(digest)
        return self.by_key[digest]

    def name_referral(self, referral: str, visit: Visit) -> None:
        digest = self.keys[id(visit)]
        self.referrals[referral] = digest
        self.referral_of[digest] = referral
        self.dirty.add(digest)

    def visit(self, digest: str) -> Visit:
        found = self.by_key[digest]
        assert found is not None
        return found

    def flush(self) -> None:
        """Write the new and changed visits, then forget them (the next chunk reads again)."""
        fresh = set(self.new)
        rows = [
            {
                "visit_key": k,
                "referral": self.referral_of.get(k),
                "first_shown": self.visit(k).first_shown,
                "state": dump(self.visit(k)),
            }
            for k in self.new
        ]
        if rows:
            self.session.execute(insert(_TABLE), rows)
            self.session.execute(
                insert(FIGURES),
                [{"visit_key": k, **figure_row(self.visit(k), self.texts)} for k in self.new],
            )
        keys = sorted(self.dirty - fresh)
        changed = [
            {"key": k, "state": dump(self.visit(k)), "referral": self.referral_of.get(k)}
            for k in keys
        ]
        if changed:
            self.session.execute(
                update(_TABLE)
                .where(_TABLE.c.visit_key == bindparam("key"))
                .values(
                    state=bindparam("state"),
                    referral=func.coalesce(bindparam("referral"), _TABLE.c.referral),
                ),
                changed,
            )
            self.session.execute(
                update(FIGURES)
                .where(FIGURES.c.visit_key == bindparam("b_key"))
                .values({name: bindparam(f"b_{name}") for name in _FIGURE_COLUMNS}),
                [
                    {"b_key": k}
                    | {f"b_{n}": v for n, v in figure_row(self.visit(k), self.texts).items()}
                    for k in keys
                ],
            )
        self._keep_texts()
        self.reset()

    def _keep_texts(self) -> None:
        """The texts the new figure rows name that are not kept yet (one row per digest)."""
        wanted = set(self.texts)
        kept: set[int] = set()
        for first in range(0, len(wanted), 500):
            part = sorted(wanted)[first : first + 500]
            kept.update(
                self.session.execute(select(TEXTS.c.digest).where(TEXTS.c.digest.in_(part)))
                .scalars()
                .all()
            )
        missing = [{"digest": d, "text": self.texts[d]} for d in sorted(wanted - kept)]
        if missing:
            self.session.execute(insert(TEXTS), missing)


class _Visits:
    """The joiner's `visits` mapping, backed by `_Kept`."""

    def __init__(self, kept: _Kept) -> None:
        self.kept = kept

    def get(self, key: VisitKey) -> Visit | None:
        return self.kept.get(key)

    def __setitem__(self, key: VisitKey, visit: Visit) -> None:
        self.kept.put(key, visit)


class _Referrals:
    """The joiner's `by_referral` mapping, backed by `_Kept`."""

    def __init__(self, kept: _Kept) -> None:
        self.kept = kept

    def get(self, referral: str) -> Visit | None:
        return self.kept.of_referral(referral)

    def __setitem__(self, referral: str, visit: Visit) -> None:
        self.kept.name_referral(referral, visit)


def refresh_statistics(db: Database) -> None:
    """On PostgreSQL, VACUUM (ANALYZE) the kept tables after a large catch-up: their planner
    statistics and visibility map follow their new size at once, not at autovacuum's next
    pass (just after 100k events were joined, the page's SQL took 172 ms on estimates of 15
    rows where there were 7,000, and 64 ms after it). SQLite's plans were the same either way.
    A database that cannot run it keeps autovacuum's statistics (a warning here); a role that
    does not own the tables gets PostgreSQL's own warning and skips them."""
    if db.engine.dialect.name != "postgresql":
        return
    tables = ", ".join(table.name for table in (_TABLE, FIGURES, TEXTS))
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"VACUUM (ANALYZE) {tables}")
    except DBAPIError as exc:
        log.warning("the dashboard's tables were not analyzed: %s", exc.__class__.__name__)


def bring_up_to_date(session: Session) -> int:
    """Join the events appended since the last view into the kept visits (all of them again
    when a log row was changed); returns how many damaged rows were left out."""
    return beside.catch_up(session, SUMMARY)[1]


def _clear(session: Session) -> None:
    session.execute(delete(_TABLE))
    session.execute(delete(FIGURES))
    session.execute(delete(TEXTS))


def _join(session: Session, after: int, head: int) -> int:
    """Join events after..head into the kept visits; returns the damaged rows left out."""
    kept = _Kept(session)
    joiner = _Joiner()
    joiner.visits = _Visits(kept)  # type: ignore[assignment]
    joiner.by_referral = _Referrals(kept)  # type: ignore[assignment]
    query = stored.select_events(
        LogEvent.type.in_(DASHBOARD_TYPES), LogEvent.seq > after, LogEvent.seq <= head
    ).order_by(LogEvent.seq)
    broken = 0
    events = list(stored.read(session, query, 2000)) if head - after < CHUNK else None
    for n, event in enumerate(events if events is not None else _chunks(session, query)):
        if event.broken:
            broken += 1
            continue
        joiner.add(
            {
                "seq": event.seq,
                "at": event.at,
                "type": event.type,
                "iss": event.iss,
                "patient_id": event.patient_id,
                "encounter_id": event.encounter_id,
                "data": event.data,
            }
        )
        if n % CHUNK == CHUNK - 1:
            kept.flush()
    kept.flush()
    return broken


def _chunks(session: Session, query: Any) -> Iterator[Any]:
    """The events of a long catch-up, read on a connection of their own (the writes between
    chunks go through the session's)."""
    with session.get_bind().connect() as reading:  # type: ignore[union-attr]
        dialect = reading.dialect
        result = reading.execution_options(stream_results=True, yield_per=2000).execute(query)
        for row in result:
            yield stored.decode(row, dialect)


def kept_visits(session: Session, start: datetime | None, end: datetime | None) -> list[Visit]:
    """The kept visits first shown around [start, end) (a day's margin: `summarize_visits`
    cuts exactly), in the order they were first shown."""
    query = select(_TABLE.c.state).order_by(_TABLE.c.id)
    if start is not None:
        query = query.where(_TABLE.c.first_shown >= start - timedelta(days=1))
    if end is not None:
        query = query.where(_TABLE.c.first_shown < end + timedelta(days=1))
    return [load(text) for text in session.execute(query).scalars()]


SUMMARY = beside.Summary(NAME, DASHBOARD_TYPES, _clear, _join, refresh_statistics)
