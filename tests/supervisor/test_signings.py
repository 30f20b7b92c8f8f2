"""The supervisor's signed handoffs (`figures.signed_handoffs`: the after-hours rows and the
coverage figures) from the events `signings.events` picks out equal those from every handoff
event of the 14 days read whole (the page's former reading, `old_reading.load_events`), on a
seeded log of handoffs taken by a coach's accept (closed or not, named or not), by a
reassignment, closed before taken, accepted by a partner, taken before their Sign, signed
twice; Signs that are no handoff; events of other types; events just outside the window; values
that are not text; and on SQLite damaged rows (not JSON, not an object, a time that is none,
JSON Python reads and SQLite does not). SQLite, and PostgreSQL where HANDOFF_TEST_POSTGRES_URL
is set."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.audit.models import LogEvent
from smartapp.db import Database
from smartapp.staff import caseload
from smartapp.staff.supervisor import figures, service, signings
from tests.pgschema import migrated
from tests.supervisor import old_reading

ZONE = ZoneInfo("America/New_York")
CONFIG = {"COACH_COVERAGE_HOURS": ["Mon-Fri 09:00-17:00"], "COACH_TIMEZONE": ZONE.key}
NOW = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)
NOWS = (NOW, NOW + timedelta(days=3, hours=7), NOW - timedelta(days=9))
STATUSES = (None, "accepted", "in-progress", "completed", "rejected", "cancelled", "requested")
NAMES = (None, "", "Jordan Rivera", "Sam Lee")
OTHER = ("write-attempt", "followup-outcome", "launch")


def window_start(now: datetime) -> datetime:
    days = figures.period_days(now.astimezone(ZONE).date(), service.HISTORY_DAYS)
    return datetime.combine(days[0], time.min, tzinfo=ZONE)


def _decisions(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return None if rng.random() < 0.5 else []
    kinds = ["prc-consult"] if roll < 0.8 else []
    kinds += [k for k in ("naloxone-kit", "moud-buprenorphine") if rng.random() < 0.4]
    rng.shuffle(kinds)
    accepted = (True, True, True, False, 1, 0, "yes", None)
    return [{"kind": k, "accepted": rng.choice(accepted)} for k in kinds]


def _taking(rng: random.Random, referral: Any) -> tuple[str, dict, str | None]:
    """A handoff event of any type after a Sign: it may take the handoff, or not."""
    kind = rng.choice(figures.TYPES[1:] + ("coach-accept", "handoff-status"))
    data: dict[str, Any] = {"referral": referral}
    status = rng.choice(STATUSES)
    if status is not None:
        data["task_status"] = status
    if kind == "coach-accept":
        name = rng.choice(NAMES)
        if name is not None:
            data["user_name"] = name
    elif kind == "handoff-reassign":
        if rng.random() < 0.8:
            data["to"] = rng.choice(("Practitioner/c1", "https://ehr.example/fhir/Practitioner/c2"))
        name = rng.choice(NAMES)
        if name is not None:
            data["to_name"] = name
    elif kind == "handoff-status":
        data["business_status"] = "contacted"
    return kind, data, "Practitioner/c1"


def plan(seed: int, referrals: int) -> list[tuple[datetime, str, dict, str | None]]:
    """(time, type, data, user_ref) of the events of `referrals` referrals around NOWS."""
    rng = random.Random(seed)
    start = window_start(NOWS[-1]) - timedelta(days=4)
    span = (NOWS[1] - start).total_seconds()
    plans: list[tuple[datetime, str, dict, str | None]] = []
    for n in range(referrals):
        referral: Any = f"ref-{n:04d}"
        if n % 17 == 7:  # a value that is not text (Handoff never writes one)
            referral = rng.choice((n, float(n), True, 10**25 + n))
        at = start + timedelta(seconds=rng.uniform(0, span))
        signs = [at] + ([at + timedelta(hours=rng.uniform(1, 200))] if rng.random() < 0.1 else [])
        for signed in signs:
            data = {"referral": referral, "pack": {"id": "p"}, "decisions": _decisions(rng)}
            plans.append((signed, "decision", data, "Practitioner/dr"))
        for _ in range(rng.randrange(6)):
            after = at + timedelta(hours=rng.uniform(-5 if rng.random() < 0.1 else 0.05, 90))
            kind, data, user_ref = _taking(rng, referral)
            if rng.random() < 0.05:
                data["user_name"] = rng.choice((5, 0.1 + 0.2))  # a name not text
            plans.append((after, kind, data, user_ref))
        if rng.random() < 0.3:
            other = {"referral": referral, "task_status": "completed"}
            plans.append((at + timedelta(minutes=3), rng.choice(OTHER), other, None))
    for now in NOWS:  # just outside the window and at its start
        first = window_start(now)
        for offset, tag in ((timedelta(microseconds=-1), "out"), (timedelta(0), "in")):
            decisions = [{"kind": "prc-consult", "accepted": True}]
            sign = {"referral": f"edge-{tag}-{now:%d}", "decisions": decisions}
            plans.append((first + offset, "decision", sign, None))
            take = {"referral": f"ref-{seed:04d}", "user_name": f"edge {tag}"}
            plans.append((first + offset, "coach-accept", take, "Practitioner/c3"))
    return sorted(plans, key=lambda p: p[0])


def fill(db: Database, seed: int = 1, referrals: int = 400) -> None:
    """Append the planned events through the log's own chain, each at its time."""
    clock = {"now": NOW}
    saved = chain.utcnow
    chain.utcnow = lambda: clock["now"]  # type: ignore[assignment]
    try:
        with db.session() as session:
            for at, type_, data, user_ref in plan(seed, referrals):
                clock["now"] = at.astimezone(UTC)
                referral_log.append(session, type_, user_ref=user_ref, data=data)
                session.flush()  # the chain stamps the time at the flush
    finally:
        chain.utcnow = saved  # type: ignore[assignment]


def damage(db: Database) -> None:
    """Damage rows as only SQLite keeps them: data not JSON, JSON not an object, a time that
    is none, JSON Python reads (NaN) and SQLite refuses; each on an event that counts."""
    with db.session() as session:
        accepts = session.scalars(
            select(LogEvent.seq).where(LogEvent.type == "coach-accept").order_by(LogEvent.seq)
        ).all()
        signs = session.scalars(
            select(LogEvent.seq).where(LogEvent.type == "decision").order_by(LogEvent.seq)
        ).all()
        closes = session.scalars(
            select(LogEvent.seq).where(LogEvent.type == "coach-close").order_by(LogEvent.seq)
        ).all()
    nan = '{"referral": "ref-0003", "task_status": "completed", "x": NaN}'
    changes = [
        ("data = 'not json'", accepts[len(accepts) // 2]),
        ("data = '[1, 2]'", signs[len(signs) // 2]),
        ("data = '\"text\"'", accepts[len(accepts) // 3]),
        ("at = 'not a time'", accepts[2 * len(accepts) // 3]),
        ("at = 'not a time'", signs[len(signs) // 3]),
        (f"data = '{nan}'", closes[len(closes) // 2]),
    ]
    with db.engine.begin() as connection:
        for change, seq in changes:
            connection.execute(
                text(f"UPDATE log_event SET {change} WHERE seq = :seq"), {"seq": seq}
            )


def in_coverage(at: datetime) -> bool:
    return caseload.in_coverage(caseload.Settings.from_config(CONFIG, None), at)


def old_rows(db: Database, now: datetime) -> tuple[list[figures.Signed], list[int]]:
    """The signed handoffs as the page made them: every handoff event of the days read whole."""
    broken: list[int] = []
    with db.session() as session:
        events = list(old_reading.load_events(session, broken, window_start(now)))
    return figures.signed_handoffs(events, in_coverage), broken


def new_rows(db: Database, now: datetime) -> list[figures.Signed]:
    with db.session() as session:
        events = list(signings.events(session, window_start(now)))
    return figures.signed_handoffs(events, in_coverage)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    """A migrated database: a SQLite file, or a fresh schema in HANDOFF_TEST_POSTGRES_URL."""
    with migrated(request.param, tmp_path, "signings") as database:
        yield database


def assert_cases_met(rows: list[figures.Signed]) -> None:
    """The log holds every way a handoff leaves the queue (else the test proves little)."""
    taken_by = {row.taken_by for row in rows}
    assert {None, "a coach", "closed before a coach took it", "accepted by a partner"} <= taken_by
    assert {"Jordan Rivera", "Sam Lee"} <= taken_by
    assert any(row.after_hours for row in rows) and not all(row.after_hours for row in rows)
    assert any(not isinstance(row.referral_id, str) for row in rows)
    assert any(row.taken_at and row.taken_at < row.signed_at for row in rows)


def test_the_signed_handoffs_equal_the_old_ones(db):
    fill(db)
    if db.engine.dialect.name == "sqlite":
        damage(db)
    seen: list[figures.Signed] = []
    for now in NOWS:
        expected, broken = old_rows(db, now)
        assert new_rows(db, now) == expected
        seen += expected
    assert_cases_met(seen)
    assert bool(broken) == (db.engine.dialect.name == "sqlite")


def test_the_page_equals_the_old_figures(db):
    fill(db, seed=2, referrals=250)
    if db.engine.dialect.name == "sqlite":
        damage(db)
    for now in NOWS:
        expected, _ = old_rows(db, now)
        first = window_start(now).astimezone(ZONE).date()
        recent = [r for r in expected if r.signed_at.astimezone(ZONE).date() >= first]
        page = service.supervisor_page(db, CONFIG, None, now)
        assert page.after_hours == [r for r in recent if r.after_hours]
        assert page.coverage == figures.coverage(recent, now)
        assert page.after_hours and page.coverage.signed > len(page.after_hours)


def test_only_the_events_that_can_count_come_back(db):
    """Signs and the events that can take a handoff: not the contacts and updates between."""
    fill(db, seed=3, referrals=200)
    now = NOWS[0]
    with db.session() as session:
        picked = list(signings.events(session, window_start(now)))
        every = list(old_reading.load_events(session, [], window_start(now)))
    assert len(picked) < len(every)
    for event in picked:
        data = event["data"]
        assert (
            event["type"] in signings.ALWAYS_READ
            or data.get("task_status") in signings.TAKING_STATUSES
        )
