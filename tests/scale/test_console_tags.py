"""The console's kind and outcome filters read the tags kept beside the log (issue 15: they
read every candidate event's data, 1.2 s per view at 100k events, seconds more at 1M): the
page and the count are those of the reference (`Search.matches` over every event, as before)
on the public scenarios and a generated log, after new events, after a row was changed (the
tags are made again) and with a damaged row; on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

import benchmarks.scale_log as scale_log
from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent, LogEventTag, LogSummaryState
from smartapp.db import Database
from smartapp.staff.console import tags
from smartapp.staff.console.search import OUTCOMES, Search, run_search
from tests.console import logdata
from tests.pgschema import POSTGRES

KINDS = ("prc-consult", "moud-buprenorphine", "moud-continue", "naloxone-kit", "nothing-such")
PAGE = 7


def reference(db: Database, search: Search) -> tuple[list[int], int]:
    """The page (seqs, newest first) and count as the console found them before the tags:
    every candidate event's data read and matched in Python."""
    with db.session() as session:
        query = search.query().order_by(LogEvent.seq.desc())
        found = [e.seq for e in stored.read(session, query) if search.matches(e)]
    offset = (search.page - 1) * PAGE
    return found[offset : offset + PAGE], len(found)


def tagged(db: Database, search: Search) -> tuple[list[int], int]:
    with db.session() as session:
        page, total = run_search(session, search, PAGE)
    return [e.seq for e in page], total


def searches() -> list[Search]:
    out = [Search(kind=k) for k in KINDS] + [Search(outcome=o) for o in OUTCOMES]
    out += [Search(kind=k, outcome=o) for k in KINDS[:3] for o in ("accepted", "declined")]
    out += [Search(kind="prc-consult", outcome="written")]  # no type holds both: nothing
    out += [Search(kind="prc-consult", type="decision"), Search(kind="prc-consult", page=3)]
    return out + [Search(kind="naloxone-kit", user="dr-b")]


def assert_same(db: Database) -> None:
    with db.session() as session:
        patient = session.scalar(
            select(LogEvent.patient_id).where(LogEvent.type == "decision").limit(1)
        )
    found = 0
    for search in [*searches(), Search(outcome="accepted", patient=patient or "")]:
        expected = reference(db, search)
        assert tagged(db, search) == expected, search
        found += expected[1]
    assert found > 0


def test_the_scenario_log(db, clock):
    logdata.fill(db, clock)
    assert_same(db)
    assert tagged(db, Search(kind="prc-consult"))[1] > 0


def test_a_generated_log_and_events_appended_after(db):
    scale_log.generate(db, 3000, sign=False)
    assert_same(db)
    with db.session() as session:
        before = session.scalar(select(func.count()).select_from(LogEventTag))
    scale_log.generate(db, 600, sign=False)  # 600 more, after the last event
    assert_same(db)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(LogEventTag)) > before
        head = session.scalar(
            select(func.max(LogEvent.seq)).where(LogEvent.type.in_(tags.TAGGED_TYPES))
        )
        assert session.get(LogSummaryState, tags.NAME).seq == head


def test_brought_up_to_date_in_small_units(db):
    scale_log.generate(db, 2000, sign=False)
    tags.bring_up_to_date(db, unit=150)
    assert_same(db)


def test_a_changed_row_makes_the_tags_again(db, clock):
    """A decision flipped in the database leaves a tamper mark: the tags are made again from
    the rows as they are now, as the reference reads them."""
    logdata.fill(db, clock)
    accepted = tagged(db, Search(outcome="accepted"))[1]
    with db.engine.begin() as connection:
        seq = connection.execute(
            text(
                "SELECT seq FROM log_event WHERE type = 'decision' "
                "AND data LIKE :accepted ORDER BY seq LIMIT 1"
            ),
            {"accepted": '%"accepted":true%'},
        ).scalar_one()
        connection.execute(
            text("UPDATE log_event SET data = replace(data, 'true', 'false') WHERE seq = :s"),
            {"s": seq},
        )
    assert tagged(db, Search(outcome="accepted"))[1] < accepted
    assert_same(db)


def test_a_damaged_row_matches_as_before(db, clock):
    logdata.fill(db, clock)
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE log_event SET data = 'not json' WHERE seq = "
                "(SELECT min(seq) FROM log_event WHERE type = 'decision')"
            )
        )
    assert_same(db)


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        ("suggestions-shown", {"suggestions": [{"kind": "a"}, {"kind": "b"}]}, {"k:a", "k:b"}),
        ("suggestions-shown", {"suggestions": "a"}, set()),
        ("suggestions-shown", {"suggestions": [{"kind": "x" * 101}, 3, None]}, set()),
        (
            "decision",
            {"decisions": [{"kind": "a", "accepted": True}, {"kind": "b"}]},
            {"k:a", "o:accepted", "ko:a|accepted", "k:b", "o:declined", "ko:b|declined"},
        ),
        ("decision", {"decisions": [{"accepted": 1}]}, {"o:accepted"}),
        ("write-attempt", {"outcome": "failed"}, {"o:failed"}),
        ("write-attempt", {"outcome": 7}, set()),
        ("write-held", None, {"o:held"}),
        ("launch", {"suggestions": [{"kind": "a"}]}, set()),
        ("decision", "not an object", set()),
    ],
)
def test_the_tags_of_one_event(type_, data, expected):
    assert tags.event_tags(type_, data) == expected


@pytest.mark.skipif(not POSTGRES, reason="HANDOFF_TEST_POSTGRES_URL is not set")
def test_on_postgresql_a_generated_log_new_events_and_a_changed_row(pg):
    scale_log.generate(pg, 2000, sign=False)
    assert_same(pg)
    scale_log.generate(pg, 300, sign=False)
    assert_same(pg)
    with pg.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE log_event SET data = replace(data::text, 'true', 'false')::json "
                "WHERE seq = (SELECT min(seq) FROM log_event WHERE type = 'decision')"
            )
        )
    assert_same(pg)
