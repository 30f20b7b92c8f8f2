"""The console's incremental verification: it checks only what follows the last verified head,
and still finds every tampering of the audit tests (tests/audit/test_verify.py), whether the
tampered events were verified before or not; a missing trigger sends it over the whole log;
the last full verification is recorded and shown."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from smartapp.audit.chain import DEFAULT_EVERY
from smartapp.audit.incremental import verify_everything, verify_since_last
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.verify import verify
from smartapp.db import Database
from tests.audit.conftest import EVERY, fill
from tests.audit.test_verify import CASES, EVENTS, rewrite_from

MORE = 7  # events appended after the first verification, before the tampering


def keys(signer) -> list:
    return [signer.public_key]


def check(db: Database, signer):
    with db.session() as session:
        return verify_since_last(session, keys(signer), EVERY)


def full(db: Database, signer):
    with db.session() as session:
        return verify(session, keys(signer), EVERY)


@pytest.fixture
def log_db(db):
    fill(db, EVENTS)
    return db


def test_only_what_follows_the_verified_head_is_checked(log_db, signer):
    first = check(log_db, signer)
    assert first.report.ok and first.checked_from == 1 and first.reason
    assert first.full_at is not None and first.full_ok and first.full_seq == EVENTS
    fill(log_db, MORE, start=EVENTS + 1)
    second = check(log_db, signer)
    assert second.report.ok and second.checked_from == EVENTS + 1 and second.reason is None
    whole = full(log_db, signer)
    assert second.report.summary() == whole.summary()
    assert second.report.events == EVENTS + MORE
    assert second.report.last_checkpoint == whole.last_checkpoint
    assert second.full_at == first.full_at  # not a full verification


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("verified_first", [True, False])
def test_every_tampering_of_the_audit_tests_is_found(log_db, signer, name, verified_first):
    """Tampered after a verification (in the verified part: the triggers' marks send the check
    over the whole log) or before any: the break is the one full verification names."""
    if verified_first:
        assert check(log_db, signer).report.ok
    case = CASES[name]
    case.tamper(log_db)
    found = check(log_db, signer)
    assert not found.report.ok
    assert found.report.summary() == full(log_db, signer).summary()
    assert found.report.first.seq == case.seq
    again = check(log_db, signer)  # and on every view after, until the log is whole again
    assert not again.report.ok


def tamper_more(db: Database, name: str) -> None:
    with db.engine.begin() as connection:
        if name == "truncated":
            connection.execute(text("DELETE FROM log_event WHERE seq >= 28"))
        elif name == "checkpoint-removed":
            connection.execute(text("DELETE FROM log_checkpoint WHERE seq = 20"))
        elif name == "recomputed-in-place":
            connection.execute(text("UPDATE log_event SET type = 'x' WHERE seq = 7"))
    if name == "forged-checkpoints":
        rewrite_from(db, 15)
        with db.session() as session:
            for cp in session.scalars(select(LogCheckpoint).where(LogCheckpoint.seq >= 20)):
                cp.hash = session.get(LogEvent, cp.seq).hash


@pytest.mark.parametrize(
    "name", ["truncated", "checkpoint-removed", "recomputed-in-place", "forged-checkpoints"]
)
def test_the_other_tamperings_are_found_too(log_db, signer, name):
    assert check(log_db, signer).report.ok
    tamper_more(log_db, name)
    found = check(log_db, signer)
    assert not found.report.ok
    assert found.report.summary() == full(log_db, signer).summary()


def test_tampering_in_the_new_events_is_found_from_the_verified_head(log_db, signer):
    assert check(log_db, signer).report.ok
    fill(log_db, MORE, start=EVENTS + 1)
    with log_db.engine.begin() as connection:  # a forged hash: caught by the walk from #31
        connection.execute(
            text("UPDATE log_event SET hash = :h WHERE seq = :s"), {"h": "0" * 64, "s": EVENTS + 3}
        )
    found = check(log_db, signer)
    assert not found.report.ok and found.report.first.seq == EVENTS + 3


def test_dropped_triggers_send_every_view_over_the_whole_log(log_db, signer):
    assert check(log_db, signer).report.ok
    with log_db.engine.begin() as connection:
        connection.execute(text("DROP TRIGGER log_event_update_mark"))
        connection.execute(text("UPDATE log_event SET type = 'x' WHERE seq = 5"))
    found = check(log_db, signer)
    assert found.checked_from == 1 and "triggers are missing" in (found.reason or "")
    assert not found.report.ok and found.report.first.seq == 5


def test_a_rewritten_anchor_sends_the_check_over_the_whole_log(log_db, signer):
    """The event at the verified head no longer has its hash (the triggers were dropped and
    made again around the rewrite): caught without a mark."""
    assert check(log_db, signer).report.ok
    with log_db.engine.begin() as connection:
        for name in ("log_event_update_mark",):
            connection.execute(text(f"DROP TRIGGER {name}"))
    rewrite_from(log_db, 15)
    with log_db.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER log_event_update_mark AFTER UPDATE ON log_event BEGIN INSERT "
                "INTO log_tamper_mark (table_name, seq) VALUES ('log_event', OLD.seq); END"
            )
        )
    found = check(log_db, signer)
    assert "no longer has the hash" in (found.reason or "")
    assert not found.report.ok


def test_a_full_verification_on_demand_is_recorded(log_db, signer):
    with log_db.session() as session:
        done = verify_everything(session, keys(signer), DEFAULT_EVERY, reason="asked for")
    assert done.report.ok and done.checked_from == 1 and done.full_seq == EVENTS
    assert check(log_db, signer).full_at == done.full_at


def test_the_scheduled_full_verification_is_recorded_for_the_console(log_db, signer, tmp_path):
    """`handoff audit verify --record` (cron): the console's next page checks only what
    follows it, and shows when it ran."""
    from click.testing import CliRunner

    from smartapp.audit.cli import audit

    key = tmp_path / "public.pem"
    key.write_text(signer.public_pem())
    url = log_db.url
    result = CliRunner().invoke(
        audit, ["verify", "--database-url", url, "--public-key", str(key), "--record"]
    )
    assert result.exit_code == 0, result.output
    fill(log_db, MORE, start=EVENTS + 1)
    found = check(log_db, signer)
    assert found.report.ok and found.checked_from == EVENTS + 1
    assert found.full_at is not None and found.full_seq == EVENTS and found.full_ok
