"""The supervisor's caseload series from the holdings kept beside the log (issue 15: the page
read every handoff event of the log on each view, and counted every open handoff again after
each event) equals the series the old way made from every event with the old loop, on a seeded
log of six weeks with accepts, reassignments (to absolute and relative references, some closing
the handoff at once), closes, partner updates, nameless coaches and a damaged row; after events
appended since the last view; after a changed row (the holdings are made again); and the page's
after-hours rows equal the old ones too."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.db import Database
from smartapp.staff import caseload
from smartapp.staff.supervisor import figures, holdings, service
from tests.pgschema import POSTGRES, migrated_schema
from tests.supervisor import old_reading

START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
ZONE = ZoneInfo("America/New_York")
COACHES = [
    ("Practitioner/c1", "Jordan Rivera"),
    ("https://ehr.example/fhir/Practitioner/c2", "Sam Lee"),
    ("Practitioner/c3", ""),  # a coach no event names
    ("Practitioner/c4", "Alex Kim"),
]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def fill(db: Database, clock: Clock, referrals: int, seed: int, start: int = 0) -> None:
    """Handoff events for `referrals` referrals over about six weeks, in time order."""
    rng = random.Random(seed)
    plans: list[tuple[datetime, str, dict, str | None]] = []
    for n in range(start, start + referrals):
        referral = f"ref-{n:04d}"
        at = clock.now + timedelta(hours=rng.uniform(0, 24 * 42))
        decision = {"referral": referral, "decisions": [{"kind": "prc-consult", "accepted": True}]}
        plans.append((at, "decision", decision, "Practitioner/dr"))
        for _ in range(rng.randrange(5)):
            at += timedelta(hours=rng.uniform(0.1, 24 * 6))
            ref, name = rng.choice(COACHES)
            roll = rng.random()
            if roll < 0.35:
                status = "cancelled" if rng.random() < 0.1 else "accepted"
                data = {"referral": referral, "task_status": status}
                plans.append(
                    (at, "coach-accept", data | ({"user_name": name} if name else {}), ref)
                )
            elif roll < 0.55:
                data = {"referral": referral, "to": ref, "to_name": name, "from": None}
                data["task_status"] = "completed" if rng.random() < 0.2 else "accepted"
                plans.append((at, "handoff-reassign", data, "Practitioner/boss"))
            elif roll < 0.7:
                plans.append((at, "coach-contact", {"referral": referral}, ref))
            elif roll < 0.85:
                data = {"referral": referral, "task_status": rng.choice(figures.CLOSED)}
                plans.append((at, rng.choice(("coach-close", "coach-link")), data, ref))
            else:
                data = {"referral": referral, "task_status": "accepted", "partner": "p"}
                plans.append((at, "handoff-status", data, None))
    saved = chain.utcnow
    chain.utcnow = clock  # type: ignore[assignment]
    try:
        with db.session() as session:
            for at, type_, data, user_ref in sorted(plans, key=lambda p: p[0]):
                clock.now = at
                referral_log.append(session, type_, user_ref=user_ref, data=data)
                session.flush()  # the chain stamps the time at the flush
    finally:
        chain.utcnow = saved  # type: ignore[assignment]


def reference(events: list[dict], days: list, zone: ZoneInfo, now: datetime) -> list:
    """`figures.caseload_over_time` as it was (every owner counted again after each event)."""
    ordered = figures._ordered(events)

    def midnight(day):
        return min(now, datetime.combine(day, time.min, tzinfo=zone))

    owner: dict[str, str] = {}
    names: dict[str, str] = {}
    series: dict[str, list[int]] = {}
    position = 0
    for index, day in enumerate(days):
        start, end = midnight(day), midnight(day + timedelta(days=1))
        while position < len(ordered) and ordered[position]["at"] < start:
            figures._apply(ordered[position], owner, names)
            position += 1
        peak = Counter(owner.values())
        while position < len(ordered) and ordered[position]["at"] < end:
            figures._apply(ordered[position], owner, names)
            position += 1
            peak |= Counter(owner.values())
        for ref, count in peak.items():
            series.setdefault(ref, [0] * len(days))[index] = count
    return sorted(
        (figures.CoachSeries(r, names.get(r, r), tuple(c)) for r, c in series.items()),
        key=lambda s: (s.name.casefold(), s.ref),
    )


def old_series(db: Database, now: datetime) -> list[figures.CoachSeries]:
    """The series as the page made it: every handoff event of the log, the old loop."""
    days = figures.period_days(now.astimezone(ZONE).date(), service.HISTORY_DAYS)
    with db.session() as session:
        events = list(old_reading.load_events(session, []))
    expected = reference(events, days, ZONE, now)
    assert figures.caseload_over_time(events, days, ZONE, now) == expected
    return expected


def new_series(db: Database, now: datetime) -> list[figures.CoachSeries]:
    days = figures.period_days(now.astimezone(ZONE).date(), service.HISTORY_DAYS)
    holdings.bring_up_to_date(db)
    with db.session() as session:
        return service.caseload_series(session, days, ZONE, now)


def moments() -> list[datetime]:
    return [START + timedelta(days=d, hours=h) for d, h in ((3, 2), (16, 9), (30, 20), (50, 1))]


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.migrate()
    return database


def test_the_series_equals_the_old_one(db):
    fill(db, Clock(), 120, seed=3)
    for now in moments():
        expected = old_series(db, now)
        assert new_series(db, now) == expected
    assert any(s.peak for s in old_series(db, moments()[2]))
    assert any(s.name == s.ref for s in old_series(db, moments()[2]))  # the nameless coach


def test_events_after_the_last_view_and_small_units(db):
    fill(db, Clock(), 60, seed=5)
    holdings.bring_up_to_date(db, unit=37)
    fill(db, Clock(), 60, seed=6, start=60)
    for now in moments():
        assert new_series(db, now) == old_series(db, now)


def test_a_changed_row_makes_the_holdings_again(db):
    fill(db, Clock(), 80, seed=7)
    now = moments()[2]
    before = new_series(db, now)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE log_event SET type = 'coach-close' WHERE seq = "
                "(SELECT min(seq) FROM log_event WHERE type = 'coach-accept' "
                "AND data LIKE '%accepted%' AND at > :at)"
            ),
            {"at": (now - timedelta(days=5)).strftime("%Y-%m-%d")},
        )
    assert new_series(db, now) == old_series(db, now) != before


def test_a_damaged_row_is_left_out_and_counted(db):
    fill(db, Clock(), 40, seed=9)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE log_event SET data = 'not json' WHERE seq = "
                "(SELECT min(seq) FROM log_event WHERE type = 'coach-accept')"
            )
        )
    now = moments()[2]
    assert new_series(db, now) == old_series(db, now)
    assert holdings.bring_up_to_date(db) == 1


def test_the_page_equals_the_old_figures(db, monkeypatch):
    fill(db, Clock(), 100, seed=11)
    now = moments()[2]
    config = {"COACH_COVERAGE_HOURS": ["Mon-Fri 09:00-17:00"], "COACH_TIMEZONE": ZONE.key}
    page = service.supervisor_page(db, config, None, now)
    settings = caseload.Settings.from_config(config, None)
    with db.session() as session:
        events = list(old_reading.load_events(session, []))
    signed = figures.signed_handoffs(events, lambda at: caseload.in_coverage(settings, at))
    days = figures.period_days(now.astimezone(ZONE).date(), service.HISTORY_DAYS)
    recent = [r for r in signed if r.signed_at.astimezone(ZONE).date() >= days[0]]
    assert page.series == reference(events, days, ZONE, now)
    assert page.after_hours == [r for r in recent if r.after_hours]
    assert page.coverage == figures.coverage(recent, now)
    assert page.after_hours and page.series


@pytest.mark.skipif(not POSTGRES, reason="HANDOFF_TEST_POSTGRES_URL is not set")
def test_on_postgresql():
    with migrated_schema("hold") as database:
        fill(database, Clock(), 80, seed=13)
        for now in moments():
            assert new_series(database, now) == old_series(database, now)
