"""The same on PostgreSQL (a schema of its own per test; skipped without
HANDOFF_TEST_POSTGRES_URL): the triggers write tamper marks, incremental verification finds
tampering in the verified part, the kept visits give the old figures, verify and export read
through a server-side cursor inside the session's transaction and leave it usable."""

from __future__ import annotations

import io
import sys

import pytest
from sqlalchemy import text

from smartapp.audit import log as referral_log
from smartapp.audit.export import write_export
from smartapp.audit.incremental import verify_since_last
from smartapp.audit.verify import verify
from smartapp.staff.console.events import search_page
from smartapp.staff.console.search import Search
from tests.audit.conftest import fill
from tests.audit.test_verify import EVENTS
from tests.console import logdata
from tests.pgschema import POSTGRES
from tests.scale.test_dashboard_same_figures import assert_same

pytestmark = pytest.mark.skipif(not POSTGRES, reason="HANDOFF_TEST_POSTGRES_URL is not set")


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE log_event SET type = 'x' WHERE seq = 7",
        "DELETE FROM log_event WHERE seq = 7",
        "DELETE FROM log_checkpoint WHERE seq = 20",
    ],
)
def test_tampering_in_the_verified_part_is_found(pg, signer, tamper):
    fill(pg, EVENTS)
    with pg.session() as session:
        assert verify_since_last(session, [signer.public_key], 10).report.ok
    with pg.engine.begin() as connection:
        connection.execute(text(tamper))
    with pg.session() as session:
        found = verify_since_last(session, [signer.public_key], 10)
    assert found.checked_from == 1 and "changed or deleted" in (found.reason or "")
    assert not found.report.ok
    with pg.session() as session:
        assert found.report.summary() == verify(session, [signer.public_key], 10).summary()


def test_the_dashboard_equals_the_old_one(pg, clock):
    logdata.fill(pg, clock, logdata.busy_visits(count=60, weeks=4))
    assert_same(pg)


def test_the_dashboard_in_sql_equals_the_old_one_on_a_generated_log(pg):
    """The figures added up in PostgreSQL (digests as BIGINT, OFFSET reads, covering
    indexes) are the old implementation's on a generated log too."""
    sys.path.insert(0, "benchmarks")
    import scale_log

    scale_log.generate(pg, 2000, sign=False)
    assert_same(pg)


def test_verify_and_export_leave_the_session_usable(pg, signer):
    fill(pg, 25)
    with pg.session() as session:
        assert verify(session, [signer.public_key], 10).ok
        out = io.StringIO()
        assert write_export(session, out, "csv", None, None).events == 25
        referral_log.append(session, "audit-read", user_ref="urn:staff:a", data={"query": "q"})
    with pg.session() as session:
        assert verify(session, [signer.public_key], 10).head_seq == 26


@pytest.mark.parametrize(
    "change",
    [
        None,
        "DELETE FROM log_event WHERE seq = 7",
        "INSERT INTO log_event (seq, at, type, data, prev_hash, hash) "
        "VALUES (0, now(), 'forged', '{}', 'x', 'y')",
    ],
)
def test_the_console_count_is_the_rows_count(pg, signer, change):
    """The events page counts from the verified head (no COUNT(*) over the table): the same
    figure as COUNT(*), on a whole log, after a deletion and after a row slipped in below #1."""
    fill(pg, EVENTS)
    with pg.session() as session:
        assert verify_since_last(session, [signer.public_key], 10).report.ok
    if change:
        with pg.engine.begin() as connection:
            connection.execute(text(change))
    with pg.session() as session:
        verified = verify_since_last(session, [signer.public_key], 10)
        total = search_page(session, Search(), 50, verified.report).total
        assert total == session.scalar(text("SELECT count(*) FROM log_event"))


def test_an_export_made_by_worker_processes_is_the_same(pg, signer, monkeypatch):
    """Forked workers read the parts with connections of their own: the same bytes as one
    process, and the parent's pooled connections still work after (never closed by a child)."""
    from smartapp.audit import export_jobs

    monkeypatch.setattr(export_jobs, "PART_EVENTS", 37)
    monkeypatch.setattr(export_jobs, "MIN_PARTS_PER_JOB", 1)
    fill(pg, 250)
    with pg.session() as session:  # a pooled connection the workers inherit
        assert verify(session, [signer.public_key], 10).ok
    for fmt in ("ndjson", "csv"):
        alone, parts = io.StringIO(), io.StringIO()
        with pg.session() as session:
            one = write_export(session, alone, fmt, None, None)
        many = export_jobs.write_export_jobs(pg, parts, fmt, None, None, jobs=2)
        assert parts.getvalue() == alone.getvalue() and many == one and one.events == 250
    with pg.session() as session:
        referral_log.append(session, "audit-read", user_ref="urn:staff:a", data={"query": "q"})
    with pg.session() as session:
        assert verify(session, [signer.public_key], 10).head_seq == 251
