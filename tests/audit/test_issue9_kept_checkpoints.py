"""Issue 9, item 29: `handoff audit verify` must not accept deleted or rewritten signed history.

Each attack of the issue is played against a real SQLite log, with raw SQL or the ORM (write
access to the database), and verify is run as an auditor runs it:
- delete the last checkpoint and every event from it on;
- then rewrite the events back to the previous checkpoint (or the whole log) with recomputed
  hashes;
- delete everything while the referrals remain;
- re-sign a rewritten log, with a key of the attacker's or with the key found beside the data.
Defences: checkpoints kept off the box (`--checkpoints FILE`, written by `handoff audit
checkpoint --export` or the AUDIT_CHECKPOINT_SINK), the cross-check with the referral tables,
the trusted public key as an argument, and a signing key kept apart from the data.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select, text

from smartapp import create_app
from smartapp.audit import chain, kept
from smartapp.audit import log as referral_log
from smartapp.audit.canonical import event_hash
from smartapp.audit.cli import audit
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.signing import load_signer
from smartapp.db import Database, Referral
from smartapp.services import current_services
from smartapp.writeback import outbox
from tests.audit.conftest import EVERY, fill, open_log
from tests.audit.test_verify import EVENTS, rewrite_from, run_verify

ISS = "https://ehr.example.org/fhir"


def keep_all(db: Database, path: Path) -> Path:
    """What an auditor's file holds after `handoff audit checkpoint --export`: every checkpoint."""
    with db.session() as session:
        kept.append(path, session.scalars(select(LogCheckpoint).order_by(LogCheckpoint.seq)))
    return path


def cut_from(db: Database, seq: int) -> None:
    """Delete the checkpoints and events from `seq` on (the attacker's truncation)."""
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_checkpoint WHERE seq >= :s"), {"s": seq})
        connection.execute(text("DELETE FROM log_event WHERE seq >= :s"), {"s": seq})


@pytest.fixture
def log_db(sqlite_db):
    fill(sqlite_db, EVENTS)  # checkpoints at 10, 20, 30
    return sqlite_db


# -- delete the last checkpoint and the tail -------------------------------------------------


def test_deleting_the_last_checkpoint_and_the_tail(log_db, sqlite_url, public_key_file, tmp_path):
    kept_file = keep_all(log_db, tmp_path / "auditor" / "kept.jsonl")
    cut_from(log_db, EVENTS)
    # The database alone cannot tell (this is the hole the issue describes) ...
    blind = run_verify("in-process", sqlite_url, public_key_file)
    assert blind.code == 0 and blind.stdout.startswith("OK: 29 events, 2 checkpoints")
    assert "no kept checkpoints given" in blind.stderr
    # ... the kept checkpoints can.
    for mode in ("in-process", "subprocess"):
        outcome = run_verify(mode, sqlite_url, public_key_file, "--checkpoints", str(kept_file))
        assert outcome.code == 1, outcome
        assert outcome.stdout.startswith(
            "BROKEN at #30: event #30 removed: the log ends at #29, but kept checkpoint #30 "
            "(line 3) signed #30; that checkpoint is gone from it too"
        ), outcome.stdout


def test_then_rewriting_back_to_the_previous_checkpoint(
    log_db, sqlite_url, public_key_file, tmp_path
):
    kept_file = keep_all(log_db, tmp_path / "kept.jsonl")
    cut_from(log_db, EVENTS)
    rewrite_from(log_db, 21)  # events #21..#29 changed, every hash recomputed
    assert run_verify("in-process", sqlite_url, public_key_file).code == 0  # the hole
    outcome = run_verify("in-process", sqlite_url, public_key_file, "--checkpoints", str(kept_file))
    assert outcome.code == 1 and outcome.stdout.startswith("BROKEN at #30: event #30 removed")


def test_rewriting_and_regrowing_to_the_kept_head(log_db, sqlite_url, public_key_file, tmp_path):
    """The attacker keeps the length: #25..#30 rewritten, checkpoint #30 dropped."""
    kept_file = keep_all(log_db, tmp_path / "kept.jsonl")
    rewrite_from(log_db, 25)
    with log_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_checkpoint WHERE seq = 30"))
    assert run_verify("in-process", sqlite_url, public_key_file).code == 0  # the hole
    outcome = run_verify("in-process", sqlite_url, public_key_file, "--checkpoints", str(kept_file))
    assert outcome.code == 1
    assert outcome.stdout.startswith(
        "BROKEN at #21: history rewritten before kept checkpoint #30 (line 3): event #30"
    ), outcome.stdout
    assert "the change lies within #21..#30" in outcome.stdout


def test_rewriting_the_whole_log_when_there_was_one_checkpoint(
    sqlite_db, sqlite_url, public_key_file, tmp_path
):
    fill(sqlite_db, EVERY)  # one checkpoint, #10
    kept_file = keep_all(sqlite_db, tmp_path / "kept.jsonl")
    cut_from(sqlite_db, EVERY)
    rewrite_from(sqlite_db, 2)  # #2..#9 rewritten
    with sqlite_db.session() as session:  # and #1 too, so nothing of the original is left
        first = session.get(LogEvent, 1)
        first.data = {"n": 1, "note": "forged"}
        first.hash = event_hash(first)
        for row in session.scalars(select(LogEvent).where(LogEvent.seq > 1).order_by(LogEvent.seq)):
            row.prev_hash = first.hash
            row.hash = event_hash(row)
            first = row
    blind = run_verify("in-process", sqlite_url, public_key_file)
    assert blind.code == 0 and blind.stdout.startswith("OK: 9 events, 0 checkpoints")
    outcome = run_verify("in-process", sqlite_url, public_key_file, "--checkpoints", str(kept_file))
    assert outcome.code == 1 and outcome.stdout.startswith("BROKEN at #10: event #10 removed")


# -- delete everything, the referrals remain --------------------------------------------------


def referrals(db: Database, count: int) -> None:
    """`count` signed referrals, as the screen stores them: row and decision event together."""
    for n in range(count):
        outbox.submit(
            db,
            visit_key=f"visit-{n}",
            context_id=f"ctx-{n}",
            iss=ISS,
            patient_id=f"pt-{n}",
            encounter_id=f"enc-{n}",
            user_ref="Practitioner/dr-1",
            decision={"decisions": []},
            plan={"profile": "epic", "operations": []},
        )


def test_deleting_everything_while_referrals_remain(
    sqlite_db, sqlite_url, public_key_file, tmp_path
):
    referrals(sqlite_db, 40)
    assert run_verify("in-process", sqlite_url, public_key_file).code == 0
    kept_file = keep_all(sqlite_db, tmp_path / "kept.jsonl")
    with sqlite_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_checkpoint"))
        connection.execute(text("DELETE FROM log_event"))
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1, outcome
    assert outcome.stdout.startswith(
        "BROKEN: the log does not cover the referral tables: 40 of 40 referrals in the referral "
        "table have no decision event in the log"
    ), outcome.stdout
    with_kept = run_verify(
        "in-process", sqlite_url, public_key_file, "--checkpoints", str(kept_file)
    )
    assert with_kept.code == 1
    assert with_kept.stdout.startswith("BROKEN at #1: events #1..#40 removed")


def test_cutting_the_tail_is_seen_by_the_referrals_even_without_kept_checkpoints(
    sqlite_db, sqlite_url, public_key_file
):
    referrals(sqlite_db, 25)  # checkpoints at 10, 20
    cut_from(sqlite_db, 20)
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert "6 of 25 referrals in the referral table have no decision event" in outcome.stdout


def test_a_forged_decision_for_no_referral_and_a_lost_attempt(
    sqlite_db, sqlite_url, public_key_file
):
    referrals(sqlite_db, 3)
    with sqlite_db.session() as session:
        referral_log.append(
            session,
            "decision",
            iss=ISS,
            patient_id="pt-x",
            data={"referral": "never-stored", "decisions": []},
        )
        session.execute(  # the row says one write was tried; the log has no such event
            Referral.__table__.update().where(Referral.visit_key == "visit-1").values(attempts=1)
        )
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    text_ = outcome.stdout + outcome.stderr
    assert (
        "1 decision event(s) name a referral the referral table does not hold (the first: "
        "event #4, referral never-stored)" in text_
    )
    assert "1 referral(s) record a different number of write attempts than the log" in text_


# -- re-signing ---------------------------------------------------------------------------------


def resign(db: Database, signer) -> None:
    """Rewrite from #15 and sign the rewritten chain anew, as one who holds `signer`."""
    rewrite_from(db, 15)
    with db.session() as session:
        session.execute(delete(LogCheckpoint))
    for seq in (10, 20, 30):
        with db.session() as session:
            head = session.get(LogEvent, seq)
            previous = seq - 10
            session.add(chain.make_checkpoint(signer, seq, head.hash, previous))


def test_resigned_with_the_attackers_key_fails_the_trusted_key(
    log_db, sqlite_url, public_key_file, tmp_path
):
    attacker = load_signer(tmp_path / "attacker" / "key.pem")
    resign(log_db, attacker)
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1
    assert "is signed by key" in outcome.stdout and "not by a key given" in outcome.stdout
    # The trusted key can be given as base64 too (raw 32 bytes, or DER).
    trusted = load_signer(tmp_path / "keys" / "audit-signing-key.pem").public_key
    raw = trusted.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    der = trusted.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for given in (base64.b64encode(raw).decode(), base64.b64encode(der).decode()):
        result = CliRunner().invoke(
            audit, ["verify", "--database-url", sqlite_url, "--public-key", given]
        )
        assert result.exit_code == 1 and "not by a key given" in result.stdout


def test_verify_no_longer_trusts_the_key_beside_the_data(tmp_path, monkeypatch):
    """The attacker holds the data folder, key included, and re-signs with it: verifying with
    the app's own key would say OK. Outside the demo verify wants the key the auditor trusts."""
    monkeypatch.delenv("HANDOFF_DEMO", raising=False)
    instance = tmp_path / "instance"
    url = f"sqlite:///{instance / 'handoff.sqlite'}"
    instance.mkdir()
    beside = load_signer(instance / "audit-signing-key.pem")  # where it used to be generated
    db = open_log(url, beside)
    fill(db, EVENTS)
    resign(db, beside)
    result = CliRunner().invoke(
        audit, ["--instance-path", str(instance), "verify", "--database-url", url]
    )
    assert result.exit_code == 2, result.output
    assert "pass --public-key PEM, the public key you trust" in result.output
    db.engine.dispose()


def test_resigned_with_the_real_key_fails_the_kept_checkpoints(
    log_db, sqlite_url, signer, public_key_file, tmp_path
):
    kept_file = keep_all(log_db, tmp_path / "kept.jsonl")
    resign(log_db, signer)  # the key was where the data was: the signatures are all genuine
    assert run_verify("in-process", sqlite_url, public_key_file).code == 0  # the hole
    outcome = run_verify("in-process", sqlite_url, public_key_file, "--checkpoints", str(kept_file))
    assert outcome.code == 1
    # Every checkpoint was re-signed (#10 too, at another time): the first finding.
    assert outcome.stdout.startswith(
        "BROKEN at #10: checkpoint #10 in the database is not the "
        "one kept (kept checkpoint #10 (line 1)): replaced or "
        "re-signed"
    ), outcome.stdout
    assert "also at #11: history rewritten before kept checkpoint #20" in outcome.stderr


def test_an_altered_kept_file_is_not_believed(log_db, sqlite_url, public_key_file, tmp_path):
    kept_file = keep_all(log_db, tmp_path / "kept.jsonl")
    lines = kept_file.read_text().splitlines()
    lines[1] = lines[1].replace('"seq":20', '"seq":21')
    kept_file.write_text("\n".join(lines) + "\n")
    outcome = run_verify("in-process", sqlite_url, public_key_file, "--checkpoints", str(kept_file))
    assert outcome.code == 1
    assert "kept checkpoint #21 (line 2) is not signed by a key given" in outcome.stdout


# -- where the key lives, and keeping checkpoints -----------------------------------------------


def production_app(tmp_path: Path, **config):
    return create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'handoff.sqlite'}", **config},
        instance_path=str(tmp_path / "instance"),
        use="config",
    )


def test_the_signing_key_is_refused_beside_the_data_outside_the_demo(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDOFF_DEMO", raising=False)
    (tmp_path / "data").mkdir()
    # The default: key and database both in the instance folder.
    beside = chain.app_checkpointing(production_app(tmp_path, DATABASE_URL=None))
    assert beside.signer is None and "the folder of the database" in beside.problem
    assert not (tmp_path / "instance" / "audit-signing-key.pem").exists()
    inside = tmp_path / "data" / "k.pem"
    refused = chain.app_checkpointing(production_app(tmp_path, AUDIT_SIGNING_KEY=str(inside)))
    assert refused.signer is None and "AUDIT_SIGNING_KEY" in refused.problem
    assert not inside.exists()
    for apart in (None, str(tmp_path / "keys" / "audit.pem")):  # instance folder, data elsewhere
        fine = chain.app_checkpointing(production_app(tmp_path, AUDIT_SIGNING_KEY=apart))
        assert fine.signer is not None and fine.problem is None
    demo = chain.app_checkpointing(production_app(tmp_path, DATABASE_URL=None, DEMO=True))
    assert demo.signer is not None  # the demo keeps it beside its data
    result = CliRunner().invoke(
        audit, ["--instance-path", str(tmp_path / "instance2"), "public-key"]
    )
    assert result.exit_code == 1 and "the folder of the database" in result.output


def test_the_sink_keeps_every_committed_checkpoint(tmp_path, monkeypatch):
    sink = tmp_path / "offbox" / "checkpoints.jsonl"
    app = create_app(
        {
            "DEMO": True,
            "AUDIT_CHECKPOINT_EVERY": 2,
            "AUDIT_CHECKPOINT_SINK": str(sink),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'i' / 'handoff.sqlite'}",
        },
        instance_path=str(tmp_path / "i"),
        use="config",
    )
    with app.app_context():
        db = current_services().db
        db.create_all()
        for n in range(5):
            with db.session() as session:
                referral_log.append(session, "launch", data={"n": n})
        with pytest.raises(RuntimeError), db.session() as session:  # rolled back: not kept
            referral_log.append(session, "launch", data={"n": 5})
            referral_log.append(session, "launch", data={"n": 6})
            session.flush()
            raise RuntimeError("the change this event recorded failed")
        signer = chain.app_checkpointing(app).signer
    assert [cp.seq for cp in kept.read(sink)] == [2, 4]
    public = tmp_path / "public.pem"
    public.write_text(signer.public_pem())
    url = app.config["DATABASE_URL"]
    outcome = run_verify("in-process", url, public, "--checkpoints", str(sink))
    assert outcome.code == 0 and "matches kept checkpoint #4" in outcome.stdout, outcome


def test_checkpoint_export_keeps_the_auditors_copy(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.delenv("HANDOFF_DEMO", raising=False)
    key = tmp_path_factory.mktemp("keys-apart") / "audit.pem"  # not in the data's folder
    monkeypatch.setenv("HANDOFF_AUDIT_SIGNING_KEY", str(key))
    url = f"sqlite:///{tmp_path / 'data' / 'handoff.sqlite'}"
    (tmp_path / "data").mkdir()
    signer = load_signer(key)
    db = open_log(url, signer)
    fill(db, 12)  # checkpoint #10
    auditor_file = tmp_path / "auditor" / "kept.jsonl"
    base = [
        "--instance-path",
        str(tmp_path / "instance"),
        "checkpoint",
        "--database-url",
        url,
        "--export",
        str(auditor_file),
    ]
    result = CliRunner().invoke(audit, base)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("checkpoint #12 ")
    assert "kept 2 new checkpoint(s)" in result.stderr
    fill(db, 3, start=13)
    result = CliRunner().invoke(audit, base)
    assert result.exit_code == 0 and "kept 1 new checkpoint(s)" in result.stderr
    assert [cp.seq for cp in kept.read(auditor_file)] == [10, 12, 15]
    public = tmp_path / "public.pem"
    public.write_text(signer.public_pem())
    outcome = run_verify("in-process", url, public, "--checkpoints", str(auditor_file))
    assert outcome.code == 0 and "matches kept checkpoint #15" in outcome.stdout
    # A database whose checkpoints are not the kept ones gets nothing appended.
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE log_checkpoint SET signature = 'AAAA' WHERE seq = 12"))
    result = CliRunner().invoke(audit, base)
    assert result.exit_code == 1 and "nothing appended" in result.output
    db.engine.dispose()


def test_the_console_checks_the_log_against_the_sink(tmp_path):
    from tests.console.conftest import STAFF, make_app
    from tests.staff_login import STAFF_KEY, staff_session_token

    sink = tmp_path / "offbox" / "checkpoints.jsonl"
    app = make_app(tmp_path / "instance", AUDIT_CHECKPOINT_EVERY=5, AUDIT_CHECKPOINT_SINK=str(sink))
    with app.app_context():
        db = current_services().db
        fill(db, 12)  # checkpoints #5 and #10, kept in the sink
    auditor = app.test_client()
    with auditor.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(app, STAFF["auditor"])
    assert "Chain verified." in auditor.get("/console/events").get_data(as_text=True)
    cut_from(db, 10)
    html = auditor.get("/console/events").get_data(as_text=True)
    assert "Chain broken." in html and "event #10 removed: the log ends at #9" in html
    db.engine.dispose()
