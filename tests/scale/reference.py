"""The dashboard as it was before issue 15, kept as the reference the new one must equal: every
event the dashboard counts read from the log on each view, joined into visits and summarised."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy.orm import Session

from smartapp.staff.dashboard import figures
from smartapp.staff.dashboard.outcomes import Directory
from smartapp.staff.dashboard.service import Dashboard, load_dashboard_events


def old_program_dashboard(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    min_cell: int,
    programs: Collection[str],
    names: Directory | None = None,
) -> Dashboard:
    """Every figure for the visits first shown in [start, end), from the whole log."""
    broken: list[int] = []
    summary = figures.summarize(
        list(load_dashboard_events(session, broken)),
        start=start,
        end=end,
        min_cell=min_cell,
        programs=programs,
        directory=names,
    )
    return Dashboard(summary, len(broken))
