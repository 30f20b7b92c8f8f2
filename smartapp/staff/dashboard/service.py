"""The dashboard's figures from the referral log (Flask-free): the visits kept beside the log
(`store`) brought up to date, damaged rows left out (counted), and every figure added up in the
database (`aggregate`: the same figures the pure `figures` make from events)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from smartapp.audit import beside
from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent
from smartapp.db import Database
from smartapp.staff.dashboard import aggregate, store
from smartapp.staff.dashboard.outcomes import Directory

# Only these event types feed the dashboard (never audit reads, exports or sign-ins).
DASHBOARD_TYPES = store.DASHBOARD_TYPES


class _Program(Protocol):
    """A catalog program, as far as the dashboard names it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def organization(self) -> str: ...
    @property
    def organization_id(self) -> str: ...


class _Partner(Protocol):
    """A community partner (partner data), as far as the dashboard names it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def programs(self) -> list[str]: ...
    @property
    def reference(self) -> str: ...


def directory(programs: Iterable[_Program], partners: Iterable[_Partner] = ()) -> Directory:
    """The names the outcomes may show: the catalog's programs by id, and partners by id and
    by organisation. A program's partner is the partner that runs it (partner data), else its
    catalog organisation; a partner's name wins over its organisation's catalog name, so one
    organisation is one row."""
    by_id = {p.id: p.name for p in programs}
    names = {p.organization_id: p.organization for p in programs}
    partner_of = {p.name: p.organization_id for p in programs}
    for partner in partners:
        organisation = partner.reference.removeprefix("Organization/")
        names[partner.id] = names[organisation] = partner.name
        for program_id in partner.programs:
            if program_id in by_id:
                partner_of[by_id[program_id]] = partner.id
    return Directory(programs=by_id, partners=names, partner_of=partner_of)


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


def bring_up_to_date(
    db: Database, unit: int = beside.UNIT_EVENTS, refresh_after: int = beside.REFRESH_AFTER_UNITS
) -> None:
    """Join the events appended since the last view into the kept visits, in units of work of
    their own of at most `unit` events: the chain lock they take is held only for each of
    them (appends go on between them), not while figures are made. After more than
    `refresh_after` units, the kept tables' statistics are brought up to date too
    (`store.refresh_statistics`)."""
    beside.bring_up_to_date(db, store.SUMMARY, unit, refresh_after)


def program_dashboard(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    min_cell: int,
    programs: Collection[str],
    names: Directory | None = None,
) -> Dashboard:
    """Every figure for the visits first shown in [start, end), small cells suppressed: from
    the visits kept beside the log (`store`), brought up to date with the events appended since
    the last view, never by re-reading the whole log, and added up in SQL (`aggregate`)."""
    unreadable = store.bring_up_to_date(session)
    summary = aggregate.dashboard_figures(
        session,
        start=start,
        end=end,
        min_cell=min_cell,
        programs=programs,
        directory=names,
    )
    return Dashboard(summary, unreadable)
