"""The dashboard from the visits kept beside the log gives exactly the figures the old
implementation (every event re-read per view: `reference`) gave: on the public scenarios, on a
generated log, for periods and thresholds, as the log grows between views, and after a row of
the log is changed (the kept visits are rebuilt)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from smartapp.db import Database
from smartapp.staff.dashboard import store, sums
from smartapp.staff.dashboard.service import program_dashboard
from tests.console import logdata
from tests.dashboard import outcomedata as od
from tests.dashboard.test_outcomes import bigger, names
from tests.scale.reference import old_program_dashboard

sys.path.insert(0, "benchmarks")
import scale_log  # noqa: E402

PERIODS = (
    (None, None),
    (datetime(2024, 3, 11, tzinfo=UTC), None),
    (None, datetime(2024, 4, 1, tzinfo=UTC)),
    (datetime(2024, 1, 8, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC)),
    (datetime(2024, 5, 6, tzinfo=UTC), datetime(2024, 5, 7, 3, tzinfo=UTC)),
)


def both(db: Database, min_cell: int, start=None, end=None) -> tuple:
    """(new, old) dashboards for the same log and question."""
    ask = dict(
        start=start, end=end, min_cell=min_cell, programs=logdata.CATALOG_PROGRAMS, names=names()
    )
    with db.session() as session:
        new = program_dashboard(session, **ask)
    with db.session() as session:
        old = old_program_dashboard(session, **ask)
    return new, old


def assert_same(db: Database) -> None:
    for start, end in PERIODS:
        for min_cell in (1, 3, 5):
            new, old = both(db, min_cell, start, end)
            assert new.figures == old.figures, (start, end, min_cell)
            assert new.unreadable == old.unreadable


def test_the_public_scenario(db, clock):
    logdata.fill(db, clock)
    assert_same(db)


def test_the_busy_scenario_filled_between_views(db, clock):
    """The kept visits are brought up to date view after view as the log grows."""
    visits = logdata.busy_visits(count=120, weeks=6)
    for part in (visits[:30], visits[30:31], visits[31:]):
        logdata.fill(db, clock, part)
        new, old = both(db, 3)
        assert new.figures == old.figures
    assert new.figures["totals"]["visits"] > 50
    assert_same(db)


def test_the_outcome_scenarios(db, clock):
    od.fill(db, clock)
    assert_same(db)
    visits, steps = bigger()
    later = tuple(
        logdata.Visit(
            **{**v.__dict__, "patient": v.patient + "-b", "encounter": v.encounter + "-b"}
        )
        for v in visits
    )
    od.fill(db, clock, later, steps)
    assert_same(db)


def test_a_generated_log(db):
    scale_log.generate(db, 3000, sign=False)
    new, old = both(db, 5)
    assert new.figures == old.figures
    assert new.figures["totals"]["visits"] > 200
    assert new.figures["outcomes"] == old.figures["outcomes"]
    assert_same(db)


def test_a_generated_log_caught_up_in_small_units(db):
    """The kept visits joined a few hundred events per unit of work (the chain lock let go
    between them, as a first view after an upgrade does) give the same figures."""
    from sqlalchemy import func, select

    from smartapp.audit.models import LogEvent, LogSummaryState
    from smartapp.staff.dashboard.service import bring_up_to_date

    scale_log.generate(db, 3000, sign=False)
    from smartapp.audit import beside

    units = []
    real = beside.catch_up

    def counted(session, summary, limit=None):
        assert summary is store.SUMMARY
        units.append(limit)
        return real(session, summary, limit)

    beside.catch_up = counted  # type: ignore[assignment]
    try:
        bring_up_to_date(db, unit=250)
    finally:
        beside.catch_up = real  # type: ignore[assignment]
    assert len(units) >= 3000 // 250  # one unit of work each
    with db.session() as session:
        counted_types = LogEvent.type.in_(store.DASHBOARD_TYPES)
        head = session.scalar(select(func.max(LogEvent.seq)).where(counted_types))
        assert head and session.get(LogSummaryState, store.NAME).seq == head
    assert_same(db)


def test_a_changed_row_rebuilds_the_kept_visits(db, clock):
    """A decision flipped in the database (a tamper mark): the kept visits are rebuilt, and
    the figures are again the old implementation's (which reads the rows as they are now)."""
    logdata.fill(db, clock)
    before, _ = both(db, 1)
    with db.engine.begin() as connection:
        seq = connection.execute(
            text("SELECT seq FROM log_event WHERE type = 'decision' ORDER BY seq LIMIT 1")
        ).scalar_one()
        connection.execute(
            text("UPDATE log_event SET data = replace(data, 'true', 'false') WHERE seq = :s"),
            {"s": seq},
        )
    new, old = both(db, 1)
    assert new.figures == old.figures
    assert new.figures["totals"]["accepted"] < before.figures["totals"]["accepted"]


def test_a_damaged_row_is_counted_as_before(db, clock):
    logdata.fill(db, clock)
    both(db, 1)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE log_event SET data = 'not json' WHERE seq = "
                "(SELECT min(seq) FROM log_event WHERE type = 'suggestions-shown')"
            )
        )
    new, old = both(db, 1)
    assert new.unreadable == old.unreadable == 1
    assert new.figures == old.figures


@pytest.mark.parametrize("min_cell", [0, -1])
def test_a_threshold_below_one_is_refused_as_before(db, min_cell):
    with pytest.raises(ValueError), db.session() as session:
        program_dashboard(session, start=None, end=None, min_cell=min_cell, programs=())


@pytest.mark.parametrize("per_figure", [1, 20])
def test_few_patients_behind_many_visits(db, clock, monkeypatch, per_figure):
    """Figures with many visits but few patients: suppression counts the patients (the first
    rows read are not enough to tell; with one row per figure read, every large figure is
    counted exactly)."""
    monkeypatch.setattr(sums.Behind, "PER_FIGURE", per_figure)
    visits = logdata.busy_visits(count=90, weeks=4)
    few = tuple(
        logdata.Visit(**{**v.__dict__, "patient": f"pat-few-{i % 4}"})
        for i, v in enumerate(visits[:60])
    )
    logdata.fill(db, clock, few + visits[60:])
    assert_same(db)


def test_an_empty_log(db):
    assert_same(db)
