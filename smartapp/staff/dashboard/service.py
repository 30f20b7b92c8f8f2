"""The dashboard's figures from the referral log (Flask-free): read the events the dashboard
counts, leave damaged rows out (counted), and summarise them with the pure figures."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent
from smartapp.staff.dashboard import figures

# Only these event types feed the dashboard (never audit reads, exports or sign-ins).
DASHBOARD_TYPES = ("suggestions-shown", "decision", "coach-contact", "coach-link", "coach-close")


@dataclass
class Dashboard:
    """The figures, and how many damaged rows of the log were left out of them."""

    figures: dict
    unreadable: int


def load_dashboard_events(session: Session, broken: list[int] | None = None) -> Iterator[dict]:
    """The events the dashboard counts, as dicts (the aggregation is pure). Damaged rows are
    left out; their seqs are added to `broken` when given."""
    query = stored.select_events(LogEvent.type.in_(DASHBOARD_TYPES)).order_by(LogEvent.seq)
    for event in stored.read(session, query, 2000):
        if event.broken:
            if broken is not None:
                broken.append(event.seq)
            continue
        yield {
            "seq": event.seq,
            "at": event.at,
            "type": event.type,
            "iss": event.iss,
            "patient_id": event.patient_id,
            "encounter_id": event.encounter_id,
            "data": event.data,
        }


def program_dashboard(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    min_cell: int,
    programs: Collection[str],
) -> Dashboard:
    """Every figure for the visits first shown in [start, end), small cells suppressed."""
    broken: list[int] = []
    summary = figures.summarize(
        list(load_dashboard_events(session, broken)),
        start=start,
        end=end,
        min_cell=min_cell,
        programs=programs,
    )
    return Dashboard(summary, len(broken))
