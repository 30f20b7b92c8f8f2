"""`handoff audit verify` against a tampered database: each kind of tampering is caught, the
report names the first affected event (seq and type) and says how, and the exit code is 1.

The attacker here has write access to the database (raw SQL, or the ORM without the chain's
hooks) but not the signing key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from smartapp.audit.canonical import event_hash
from smartapp.audit.chain import checkpoint
from smartapp.audit.cli import audit
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.signing import load_signer
from smartapp.config import REPO_ROOT
from smartapp.db import Database
from tests.audit.conftest import EVERY, TYPES, fill, open_log

EVENTS = 3 * EVERY  # checkpoints at 10, 20, 30


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run_verify(mode: str, url: str, public_key: Path, *more: str) -> Outcome:
    args = ["verify", "--database-url", url, "--public-key", str(public_key), *more]
    if mode == "in-process":
        result = CliRunner().invoke(audit, args)
        return Outcome(result.exit_code, result.stdout, result.stderr)
    done = subprocess.run(
        [sys.executable, "-m", "smartapp.audit.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def type_at(seq: int) -> str:
    return TYPES[(seq - 1) % len(TYPES)]


# -- tampering ---------------------------------------------------------------------------------


def change_one_byte(db: Database, seq: int = 7) -> None:
    with db.engine.begin() as connection:
        raw = connection.execute(
            text("SELECT data FROM log_event WHERE seq = :seq"), {"seq": seq}
        ).scalar_one()
        position = raw.index(str(seq))
        tampered = raw[:position] + str((seq + 1) % 10) + raw[position + 1 :]
        assert len(tampered) == len(raw) and tampered != raw
        connection.execute(
            text("UPDATE log_event SET data = :data WHERE seq = :seq"),
            {"data": tampered, "seq": seq},
        )


def delete_one(db: Database, seq: int = 7) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_event WHERE seq = :seq"), {"seq": seq})


def insert_one(db: Database, seq: int = 7) -> None:
    """A forged event slipped in at `seq`, correctly hashed and chained to its predecessor;
    the later events renumbered to make room (their stored hashes untouched)."""
    with db.engine.begin() as connection:
        for old in range(EVENTS, seq - 1, -1):
            connection.execute(
                text("UPDATE log_event SET seq = :new WHERE seq = :old"),
                {"new": old + 1, "old": old},
            )
    with db.session() as session:
        before = session.get(LogEvent, seq - 1)
        forged = LogEvent(
            seq=seq,
            at=before.at + timedelta(seconds=1),
            type="forged",
            user_ref="Practitioner/mallory",
            patient_id="pt-1",
            data={},
            prev_hash=before.hash,
        )
        forged.hash = event_hash(forged)
        session.add(forged)  # plain add: the chain's hooks only link events from append()


def swap_two(db: Database, a: int = 5, b: int = 11) -> None:
    with db.engine.begin() as connection:
        for old, new in ((a, -1), (b, a), (-1, b)):
            connection.execute(
                text("UPDATE log_event SET seq = :new WHERE seq = :old"), {"new": new, "old": old}
            )


def rewrite_from(db: Database, seq: int = 15) -> None:
    """Change one event and recompute every hash after it: the chain is consistent again."""
    with db.session() as session:
        rows = list(
            session.scalars(select(LogEvent).where(LogEvent.seq >= seq - 1).order_by(LogEvent.seq))
        )
        rows[1].data = {**rows[1].data, "note": "rewritten"}
        for previous, row in zip(rows, rows[1:], strict=False):
            row.prev_hash = previous.hash
            row.hash = event_hash(row)


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Database], None]
    seq: int
    type: str | None
    words: tuple[str, ...]


CASES = {
    "changed": Case(change_one_byte, 7, type_at(7), ("changed",)),
    "removed": Case(delete_one, 7, None, ("removed", "#6", "#8")),
    "inserted": Case(insert_one, 7, "forged", ("inserted", "original #7")),
    "reordered": Case(swap_two, 5, type_at(11), ("reordered", "#11", type_at(5))),
    "rewritten": Case(rewrite_from, 11, None, ("rewritten", "checkpoint #20", "#11..#20")),
}


@pytest.fixture
def log_db(sqlite_db):
    fill(sqlite_db, EVENTS)
    return sqlite_db


@pytest.mark.parametrize("mode", ["in-process", "subprocess"])
def test_a_clean_log_verifies(log_db, sqlite_url, public_key_file, mode):
    outcome = run_verify(mode, sqlite_url, public_key_file)
    assert outcome.code == 0, outcome
    with log_db.session() as session:
        head = session.get(LogEvent, EVENTS).hash
    assert outcome.stdout.strip() == f"OK: {EVENTS} events, 3 checkpoints, head #{EVENTS} {head}"


@pytest.mark.parametrize("mode", ["in-process", "subprocess"])
@pytest.mark.parametrize("name", list(CASES))
def test_tampering_is_found_and_named(log_db, sqlite_url, public_key_file, name, mode):
    case = CASES[name]
    case.tamper(log_db)
    outcome = run_verify(mode, sqlite_url, public_key_file)
    assert outcome.code == 1, outcome
    line = outcome.stdout.strip()
    named = f" ({case.type})" if case.type else ""
    assert line.startswith(f"BROKEN at #{case.seq}{named}: "), line
    for word in case.words:
        assert word in line, (word, line)


def test_truncating_the_tail_is_caught_by_the_last_checkpoint(log_db, sqlite_url, public_key_file):
    with log_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_event WHERE seq >= 28"))
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert outcome.stdout.startswith("BROKEN at #28: events #28..#30 removed"), outcome.stdout


def test_rewrite_with_forged_checkpoint_hashes_fails_the_signatures(
    log_db, sqlite_url, public_key_file
):
    rewrite_from(log_db, 15)
    with log_db.session() as session:  # the attacker "fixes" the checkpoints too
        for cp in session.scalars(select(LogCheckpoint).where(LogCheckpoint.seq >= 20)):
            cp.hash = session.get(LogEvent, cp.seq).hash
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert "BROKEN at #20: checkpoint #20: the signature does not verify" in outcome.stdout


def test_removing_a_checkpoint_is_seen(log_db, sqlite_url, public_key_file):
    with log_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_checkpoint WHERE seq = 20"))
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert "checkpoint #30 follows checkpoint #20, which is missing" in outcome.stdout


def test_checkpoints_by_another_key_are_not_trusted(log_db, sqlite_url, tmp_path):
    other = tmp_path / "other.pem"
    other.write_text(load_signer(tmp_path / "other-private.pem").public_pem())
    outcome = run_verify("in-process", sqlite_url, other)
    assert outcome.code == 1
    assert "is signed by key" in outcome.stdout and "not by a key given" in outcome.stdout


def test_inserted_event_with_a_bogus_hash_is_named_inserted(log_db, sqlite_url, public_key_file):
    """A lazier forgery: room made by renumbering, but the forged row's hash is junk."""
    insert_one(log_db, 7)
    with log_db.engine.begin() as connection:
        connection.execute(text("UPDATE log_event SET hash = :h WHERE seq = 7"), {"h": "0" * 64})
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert outcome.stdout.startswith("BROKEN at #7 (forged): event #7 (forged) was inserted")


def test_deleted_and_renumbered_is_named_removed(log_db, sqlite_url, public_key_file):
    delete_one(log_db, 7)
    with log_db.engine.begin() as connection:
        for old in range(8, EVENTS + 1):
            connection.execute(
                text("UPDATE log_event SET seq = :n WHERE seq = :o"), {"n": old - 1, "o": old}
            )
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert outcome.stdout.startswith("BROKEN at #7: event #7 removed and the later events"), (
        outcome.stdout
    )


def test_an_event_recomputed_in_place_breaks_the_link(log_db, sqlite_url, public_key_file):
    """Changed and re-hashed, but the next event still points at the old hash."""
    with log_db.session() as session:
        row = session.get(LogEvent, 7)
        row.data = {"n": 7, "note": "edited"}
        row.hash = event_hash(row)
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert outcome.stdout.startswith(f"BROKEN at #8 ({type_at(8)}): ")
    assert f"does not chain to #7 ({type_at(7)})" in outcome.stdout


def test_unsigned_tail_is_reported_but_passes(log_db, sqlite_url, public_key_file):
    fill(log_db, 3, start=EVENTS + 1)
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 0
    assert "3 event(s) after the last checkpoint (events #31..#33) not signed yet" in outcome.stderr


def test_deleting_every_checkpoint_and_rewriting_is_caught(sqlite_db, sqlite_url, public_key_file):
    """Without checkpoints a rewrite would be self-consistent; too long an unsigned run of
    events is a break of its own (the app signs every N: here every 10)."""
    fill(sqlite_db, EVENTS)
    rewrite_from(sqlite_db, 3)
    with sqlite_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_checkpoint"))
    outcome = run_verify("in-process", sqlite_url, public_key_file, "--max-unsigned", "10")
    assert outcome.code == 1
    assert outcome.stdout.startswith("BROKEN at #1: 30 events follow the last checkpoint (#0)")
    # With the default (the app's default interval, 100) the same log passes, with a note.
    lenient = run_verify("in-process", sqlite_url, public_key_file)
    assert lenient.code == 0 and "30 event(s) after the last checkpoint" in lenient.stderr


def test_a_log_written_without_a_key_fails_until_signed(sqlite_url, signer, public_key_file):
    unsigned = open_log(sqlite_url, signer=None)
    fill(unsigned, 12)
    assert run_verify("in-process", sqlite_url, public_key_file, "--max-unsigned", "10").code == 1
    assert run_verify("in-process", sqlite_url, public_key_file, "--max-unsigned", "0").code == 0
    with unsigned.session() as session:  # the operator checks, then signs on demand
        checkpoint(session, signer)
    assert run_verify("in-process", sqlite_url, public_key_file, "--max-unsigned", "10").code == 0


def test_verify_on_postgresql(pg_url, signer, public_key_file):
    db = open_log(pg_url, signer)
    fill(db, 12)
    assert run_verify("subprocess", pg_url, public_key_file).code == 0
    with db.engine.begin() as connection:
        connection.execute(
            text("UPDATE log_event SET data = CAST(:d AS json) WHERE seq = 4"), {"d": '{"n": 5}'}
        )
    outcome = run_verify("in-process", pg_url, public_key_file)
    assert outcome.code == 1
    assert outcome.stdout.startswith(f"BROKEN at #4 ({type_at(4)}): event #4")
    db.engine.dispose()


def test_a_log_without_the_chain_columns_is_refused(tmp_path, public_key_file):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    with Database(url).engine.begin() as connection:
        connection.execute(text("CREATE TABLE log_event (id INTEGER PRIMARY KEY, type TEXT)"))
        connection.execute(text("CREATE TABLE log_checkpoint (seq INTEGER PRIMARY KEY)"))
    outcome = run_verify("in-process", url, public_key_file)
    assert outcome.code == 1 and "a log from before the hash chain" in outcome.stdout


def test_hash_of_a_moved_event_recomputes_at_its_original_seq(log_db):
    """The principle the diagnosis rests on: the seq is inside the hash."""
    with log_db.session() as session:
        row = session.get(LogEvent, 9)
        moved = SimpleNamespace(
            **{c.name: getattr(row, c.name) for c in LogEvent.__table__.columns}
        )
    moved.seq = 10
    assert event_hash(moved) != row.hash and event_hash(moved, seq=9) == row.hash
