"""The console's events page counts the log from the head its verification reached (issue 15:
a COUNT(*) over a million rows is 100 ms and more on PostgreSQL): the count is the one COUNT(*)
gives, on a whole log, after new events, and after every tampering of the audit tests (a
verification that does not pass is not counted from)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from smartapp.audit.models import LogEvent
from smartapp.staff.console.events import search_page
from smartapp.staff.console.search import Search
from tests.audit.conftest import fill
from tests.audit.test_verify import CASES, EVENTS
from tests.scale.test_incremental_verify import MORE, check, tamper_more


def page_total(db, signer, search: Search | None = None) -> int:
    """The total the events page shows, with the page's own verification."""
    verified = check(db, signer)
    with db.session() as session:
        return search_page(session, search or Search(), 50, verified.report).total


def counted(db, *where) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(LogEvent).where(*where)))


@pytest.fixture
def log_db(db):
    fill(db, EVENTS)
    return db


def test_a_whole_log_is_counted_from_the_verified_head(log_db, signer):
    assert page_total(log_db, signer) == EVENTS
    fill(log_db, MORE, start=EVENTS + 1)  # after the verified head
    assert page_total(log_db, signer) == counted(log_db) == EVENTS + MORE


def test_a_row_outside_the_chain_is_counted(log_db, signer):
    """A row slipped in below #1 fires no trigger and is not walked by an incremental check:
    it is counted all the same."""
    assert page_total(log_db, signer) == EVENTS
    with log_db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO log_event (seq, at, type, data, prev_hash, hash) "
                "VALUES (0, '2024-01-01 00:00:00.000000', 'forged', '{}', 'x', 'y')"
            )
        )
    assert page_total(log_db, signer) == counted(log_db) == EVENTS + 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_tampering_keeps_the_count_true(log_db, signer, name):
    assert page_total(log_db, signer) == EVENTS
    CASES[name].tamper(log_db)
    assert page_total(log_db, signer) == counted(log_db)


@pytest.mark.parametrize(
    "name", ["truncated", "checkpoint-removed", "recomputed-in-place", "forged-checkpoints"]
)
def test_the_other_tamperings_keep_the_count_true(log_db, signer, name):
    assert page_total(log_db, signer) == EVENTS
    tamper_more(log_db, name)
    assert page_total(log_db, signer) == counted(log_db)


def test_a_filtered_search_is_counted_row_by_row(log_db, signer):
    search = Search(type="launch")
    assert page_total(log_db, signer, search) == counted(log_db, LogEvent.type == "launch")


def test_without_a_verification_the_log_is_counted_row_by_row(log_db):
    with log_db.session() as session:
        assert search_page(session, Search(), 50).total == EVENTS
