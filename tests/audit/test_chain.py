"""The chain itself: what is hashed, that it survives a round trip through SQLite and PostgreSQL,
that appends keep the caller's transaction semantics, and that checkpoints are made and signed."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from smartapp import create_app
from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.audit.canonical import (
    GENESIS,
    canonical_json,
    checkpoint_payload,
    event_hash,
    format_time,
)
from smartapp.audit.chain import ChainLockError
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.signing import load_public_key, verify_signature
from smartapp.audit.verify import verify
from smartapp.db import Database
from tests.audit.conftest import EVERY, fill, open_log

TRICKY = {
    "unicode": "Zoë — naloxone ✓ 日本",
    "nested": {"b": [1, 2.5, {"z": None, "a": True}], "a": ""},
    "big": 2**53 + 1,
    "float": 0.1,
    3: "integer key",
    "tuple": (1, 2),
}


def test_hash_is_sha256_of_the_documented_canonical_form(sqlite_db):
    with sqlite_db.session() as session:
        first = referral_log.append(
            session, "launch", user_ref="Practitioner/1", patient_id="p1", data={"b": 1, "a": "ü"}
        )
    document = {
        "v": 1,
        "seq": 1,
        "at": format_time(first.at),
        "type": "launch",
        "user": "Practitioner/1",
        "iss": None,
        "patient": "p1",
        "encounter": None,
        "data": {"a": "ü", "b": 1},
        "prev_hash": GENESIS,
    }
    serialised = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert '"data":{"a":"ü","b":1}' in serialised  # sorted, compact, UTF-8 as itself
    assert first.hash == hashlib.sha256(serialised.encode("utf-8")).hexdigest()
    assert first.seq == 1 and first.prev_hash == GENESIS
    assert format_time(first.at).endswith("Z") and len(format_time(first.at)) == 27


def _round_trip(url: str, signer) -> None:
    """Write, then read back through a new engine: every hash recomputes, verify passes."""
    db = open_log(url, signer)
    with db.session() as session:
        referral_log.append(
            session,
            "decision",
            user_ref="Practitioner/é",
            iss="https://e/fhir",
            patient_id="p",
            encounter_id="e",
            data=TRICKY,
        )
        referral_log.append(session, "write-attempt", data={})
    fill(db, 3)
    db.engine.dispose()

    fresh = Database(url)
    with fresh.session() as session:
        rows = referral_log.events(session)
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0].data["3"] == "integer key" and rows[0].data["tuple"] == [1, 2]
        assert rows[0].data["big"] == 2**53 + 1 and rows[0].data["float"] == 0.1
        for row in rows:
            assert event_hash(row) == row.hash, f"#{row.seq} does not recompute"
        assert rows[1].prev_hash == rows[0].hash
        assert verify(session, [signer.public_key]).ok
        stored = session.execute(text("SELECT data FROM log_event WHERE seq = 1")).scalar_one()
        stored = stored if isinstance(stored, dict) else json.loads(stored)
        assert canonical_json(stored) == canonical_json(rows[0].data)
    fresh.engine.dispose()


def test_round_trip_through_sqlite(sqlite_url, signer):
    _round_trip(sqlite_url, signer)


def test_round_trip_through_postgresql(pg_url, signer):
    _round_trip(pg_url, signer)
    db = Database(pg_url)
    with db.session() as session:  # the session time zone is America/Chicago, not UTC
        at = session.scalar(select(LogEvent.at).where(LogEvent.seq == 1))
        assert at.utcoffset().total_seconds() != 0
    db.engine.dispose()


def test_seq_is_gapless_and_rolled_back_events_leave_no_trace(sqlite_db):
    fill(sqlite_db, 2)
    with pytest.raises(RuntimeError), sqlite_db.session() as session:
        referral_log.append(session, "launch", data={"lost": True})
        session.flush()  # linked as #3 inside the transaction ...
        raise RuntimeError("the caller fails")  # ... then rolled back with it
    fill(sqlite_db, 1, start=3)
    with sqlite_db.session() as session:
        rows = referral_log.events(session)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[2].data["n"] == 3 and rows[2].prev_hash == rows[1].hash


def test_append_is_linked_at_flush_and_commits_with_the_change(sqlite_db):
    with sqlite_db.session() as session:
        event = referral_log.append(session, "launch", patient_id="p")
        assert event.seq is None and event.hash is None  # not linked (nor locked) yet
    assert event.seq == 1 and len(event.hash) == 64


def test_events_are_inserted_by_core_when_the_session_flushes(sqlite_db):
    """Appended events are not ORM objects of the session: a query in the same unit of work
    (autoflush) and an explicit flush link and insert them as an ORM flush did, and a unit of
    work with nothing else to flush links them at its commit."""
    with sqlite_db.session() as session:
        first = referral_log.append(session, "launch", patient_id="p")
        assert first not in session and not session.new
        seen = session.scalars(select(LogEvent.seq).where(LogEvent.patient_id == "p")).all()
        assert seen == [1] and first.seq == 1  # the query flushed it first
        second = referral_log.append(session, "shown", patient_id="p")
        session.flush()
        assert second.seq == 2 and second.prev_hash == first.hash
        third = referral_log.append(session, "decision", patient_id="p")
    assert third.seq == 3 and third.prev_hash == second.hash
    with sqlite_db.session() as session:
        stored = session.scalars(select(LogEvent).order_by(LogEvent.seq)).all()
        linked = [(e.seq, e.hash) for e in (first, second, third)]
        assert [(e.seq, e.hash) for e in stored] == linked
        assert all(e.hash == event_hash(e) for e in stored)


def test_the_event_does_not_commit_without_its_change(sqlite_db):
    """A double Sign: the second unit of work fails on the visit's unique key after its
    'decision' event was already linked; the event goes with it and the chain has no gap."""
    visits = Table("visit_under_test", MetaData(), Column("key", String(20), primary_key=True))
    visits.create(sqlite_db.engine)

    def sign(key: str) -> None:
        with sqlite_db.session() as session:
            referral_log.append(session, "decision", data={"visit": key})
            session.flush()  # linked (and the chain locked) before the change is tried
            session.execute(insert(visits).values(key=key))

    sign("visit-1")
    with pytest.raises(IntegrityError):
        sign("visit-1")
    sign("visit-2")
    with sqlite_db.session() as session:
        rows = referral_log.events(session)
        assert [(r.seq, r.data["visit"]) for r in rows] == [(1, "visit-1"), (2, "visit-2")]
        assert session.scalar(select(func.count()).select_from(visits)) == 2
        assert verify(session).ok


def test_checkpoint_every_n_events_signed_over_seq_hash_time(sqlite_db, signer):
    fill(sqlite_db, 2 * EVERY + 3)
    with sqlite_db.session() as session:
        checkpoints = list(session.scalars(select(LogCheckpoint).order_by(LogCheckpoint.seq)))
        head = {r.seq: r.hash for r in referral_log.events(session)}
    assert [c.seq for c in checkpoints] == [EVERY, 2 * EVERY]
    assert [c.prev_seq for c in checkpoints] == [0, EVERY]
    for cp in checkpoints:
        assert cp.hash == head[cp.seq] and cp.key_id == signer.key_id
        payload = checkpoint_payload(
            seq=cp.seq, hash_=cp.hash, at=cp.at, prev_seq=cp.prev_seq, key_id=cp.key_id
        )
        assert verify_signature(signer.public_key, payload, cp.signature)
        assert not verify_signature(
            signer.public_key, payload.replace(b'"seq"', b'"Seq"'), cp.signature
        )


def test_checkpoint_on_demand(sqlite_db):
    fill(sqlite_db, 3)
    with sqlite_db.session() as session:
        made = referral_log.checkpoint(session)
    with sqlite_db.session() as session:
        again = referral_log.checkpoint(session)  # head already signed: the same one
    assert made.seq == 3 and again.seq == 3 and again.signature == made.signature


def test_checkpoints_wait_without_a_key_and_catch_up(sqlite_url, signer):
    unsigned = open_log(sqlite_url, signer=None)
    fill(unsigned, EVERY + 5)
    with unsigned.session() as session:
        assert session.scalar(select(func.count()).select_from(LogCheckpoint)) == 0
    chain.configure(unsigned, signer=signer, every=EVERY)
    fill(unsigned, 1, start=EVERY + 6)
    with unsigned.session() as session:
        assert [c.seq for c in session.scalars(select(LogCheckpoint))] == [EVERY + 6]
        assert verify(session, [signer.public_key]).ok


def test_same_thread_second_session_fails_fast_instead_of_deadlocking(sqlite_db):
    with sqlite_db.session() as outer:
        referral_log.append(outer, "launch")
        outer.flush()  # holds the chain lock until this unit of work ends
        with pytest.raises(ChainLockError), sqlite_db.session() as inner:
            referral_log.append(inner, "launch")
    fill(sqlite_db, 1, start=2)  # the lock was released by both
    with sqlite_db.session() as session:
        assert [r.seq for r in referral_log.events(session)] == [1, 2]


def test_append_refuses_what_postgresql_would_refuse_later(sqlite_db):
    with sqlite_db.session() as session:
        with pytest.raises(ValueError):
            referral_log.append(session, "x" * 51)
        with pytest.raises(ValueError):
            referral_log.append(session, "launch", data={"nan": float("nan")})
        with pytest.raises(TypeError):
            referral_log.append(session, "launch", data=["not", "a", "dict"])


def test_record_read_logs_the_auditor_and_the_query(sqlite_db):
    with sqlite_db.session() as session:
        referral_log.record_read(
            session, "Practitioner/auditor-7", "events for pt-1, May", patient_id="pt-1"
        )
    with sqlite_db.session() as session:
        (event,) = referral_log.events(session)
    assert (event.type, event.user_ref, event.patient_id) == (
        "audit-read",
        "Practitioner/auditor-7",
        "pt-1",
    )
    assert event.data == {"query": "events for pt-1, May"}


def test_inside_the_app_the_key_is_generated_in_the_instance_folder(tmp_path):
    instance = tmp_path / "instance"
    app = create_app({"AUDIT_CHECKPOINT_EVERY": 2, "DEMO": True}, instance_path=str(instance))
    from smartapp.services import current_services

    with app.app_context():
        db = current_services().db
        for _ in range(4):
            with db.session() as session:
                referral_log.append(session, "launch")
        with db.session() as session:
            assert [c.seq for c in session.scalars(select(LogCheckpoint))] == [2, 4]
    key = instance / "audit-signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = load_public_key(key)
    with db.session() as session:
        assert verify(session, [public]).ok
    db.engine.dispose()


def test_configured_key_path_is_used(tmp_path):
    configured = tmp_path / "elsewhere" / "key.pem"
    app = create_app(
        {"AUDIT_SIGNING_KEY": str(configured), "DEMO": True}, instance_path=str(tmp_path / "i")
    )
    assert chain.signing_key_path(app) == configured
    signer = chain.app_checkpointing(app).signer
    assert configured.exists() and signer.key_id == chain.app_checkpointing(app).signer.key_id
    assert not (tmp_path / "i" / "audit-signing-key.pem").exists()


def test_times_are_utc_and_non_decreasing(sqlite_db):
    fill(sqlite_db, 5)
    with sqlite_db.session() as session:
        times = [format_time(r.at) for r in referral_log.events(session)]
    assert times == sorted(times)
    assert all(t.startswith(str(datetime.now(UTC).year)) for t in times)
