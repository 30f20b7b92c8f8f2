"""The launch's and the outbox's single statements (issue 15: less CPU per flow), on SQLite and
PostgreSQL: a pending authorization taken once (DELETE ... RETURNING), a lease taken and the
row read in one UPDATE ... RETURNING, a new launch waking its visit's queued writes, and a
write's credentials read from the launch context's credential columns only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from smartapp.audit import log as referral_log
from smartapp.db import Database, LaunchContext, Referral
from smartapp.detached import DetachedReader
from smartapp.fhir.errors import FhirError
from smartapp.launch import client as smart
from smartapp.launch import sessions, store
from smartapp.launch.client import AuthorizationRequest, SmartConfiguration
from smartapp.launch.tokens import TokenCipher
from smartapp.writeback import outbox, profiles
from smartapp.writeback.plan import WritePlan
from smartapp.writeback.referral import visit_key
from smartapp.writeback.resources import plan_writes
from tests.pgschema import migrated
from tests.unit.referrals import SETTINGS, referral

ISS = "http://ehr.test/fhir"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    """A migrated database: a SQLite file, or a fresh schema in HANDOFF_TEST_POSTGRES_URL."""
    with migrated(request.param, tmp_path, "ls") as database:
        yield database


def services_for(db: Database) -> SimpleNamespace:
    """What the store and the sessions use of Services."""
    return SimpleNamespace(
        db=db, cipher=TokenCipher(TokenCipher.new_key()), timeout=(1.0, 1.0), registry=None
    )


def remember(services, state: str) -> None:
    registration = SimpleNamespace(id="sandbox", iss=ISS)
    config = SmartConfiguration(
        authorization_endpoint=f"{ISS}/authorize",
        token_endpoint=f"{ISS}/token",
        jwks_uri=f"{ISS}/jwks",
        issuer=ISS,
        capabilities=(),
        code_challenge_methods=("S256",),
    )
    auth = AuthorizationRequest(url="u", state=state, code_verifier="v" * 64, nonce="n" * 20)
    store.remember_authorization(services, registration, config, auth, "browser-1")


def test_a_pending_authorization_is_taken_once(db):
    services = services_for(db)
    remember(services, "state-1")
    pending = store.take_authorization(services, "state-1")
    assert pending is not None
    assert (pending.state, pending.browser_id, pending.registration_id) == (
        "state-1",
        "browser-1",
        "sandbox",
    )
    assert (pending.code_verifier, pending.nonce, pending.iss) == ("v" * 64, "n" * 20, ISS)
    assert (pending.token_endpoint, pending.jwks_uri) == (f"{ISS}/token", f"{ISS}/jwks")
    assert store.authorization_age(pending, datetime.now(UTC)) < timedelta(minutes=1)
    assert store.take_authorization(services, "state-1") is None  # single use
    assert store.take_authorization(services, "") is None
    assert store.take_authorization(services, "unknown") is None


def test_a_lone_write_commits_by_itself_on_postgresql_and_takes_the_writer_lock_on_sqlite(db):
    """Remembering and taking a pending authorization are one statement each: on PostgreSQL
    run in autocommit (no BEGIN and COMMIT round trips), on SQLite in a unit of work that
    takes the referral log's writer lock first (BEGIN IMMEDIATE). Either way each is
    committed when the block ends, and a failing one leaves nothing."""
    from sqlalchemy import event
    from sqlalchemy.exc import IntegrityError

    services = services_for(db)
    executed: list[tuple[str, bool | None]] = []

    def note(conn, _cursor, statement, *_args):
        driver = conn.connection.driver_connection
        executed.append((statement.split()[0].upper(), getattr(driver, "autocommit", None)))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        remember(services, "state-2")
        with db.read() as connection:  # committed: another connection sees it
            count = connection.exec_driver_sql("SELECT count(*) FROM pending_authorization")
            assert count.scalar() == 1
        assert store.take_authorization(services, "state-2") is not None
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    if db.engine.dialect.name == "postgresql":
        assert executed == [("INSERT", True), ("SELECT", True), ("DELETE", True)]
    else:
        assert [name for name, _ in executed] == ["BEGIN", "INSERT", "SELECT", "BEGIN", "DELETE"]
    remember(services, "state-3")
    with pytest.raises(IntegrityError):  # the same state twice: refused, nothing half-done
        remember(services, "state-3")
    assert store.take_authorization(services, "state-3") is not None
    assert store.take_authorization(services, "state-3") is None


def open_launch(services, encounter: str | None = "e1", patient: str = "p1") -> str:
    pending = SimpleNamespace(iss=ISS, token_endpoint=f"{ISS}/token")
    token = {"access_token": "at-1", "patient": patient, "scope": "launch", "expires_in": 3600}
    if encounter:
        token["encounter"] = encounter
    claims = {"fhirUser": f"{ISS}/Practitioner/doc", "name": "Dr Demo"}
    registration = SimpleNamespace(id="sandbox")
    return store.open_context(services, pending, registration, token, claims, "browser-2")


def submitted(db: Database, visit: str, encounter: str | None = "e1", patient: str = "p1") -> str:
    row, _ = outbox.submit(
        db,
        visit_key=visit,
        context_id="old-launch",
        iss=ISS,
        patient_id=patient,
        encounter_id=encounter,
        user_ref="Practitioner/doc",
        decision={"decisions": [{"kind": "prc-consult", "accepted": True}]},
        plan=plan_writes(referral(), SETTINGS, profiles.profile("fhir-rest")),
    )
    return row.id


def test_a_new_launch_wakes_its_visits_queued_writes_only(db):
    services = services_for(db)
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = {
        "same": submitted(db, "v1"),
        "other encounter": submitted(db, "v2", encounter="e2"),
        "no encounter": submitted(db, "v3", encounter=None),
    }
    with db.session() as session:
        session.execute(update(Referral).values(next_attempt_at=later))
    context_id = open_launch(services)
    due = set(outbox.due(db))
    assert due == {ids["same"]}
    open_launch(services, encounter=None)
    assert set(outbox.due(db)) == {ids["same"], ids["no encounter"]}
    with db.session() as session:
        context = session.get(LaunchContext, context_id)
        assert context is not None
        assert (context.patient_id, context.encounter_id, context.user_ref) == (
            "p1",
            "e1",
            "Practitioner/doc",
        )
        assert context.shown is None and context.created_at is not None
        assert services.cipher.decrypt(context.token_ciphertext, context_id)["access_token"] == (
            "at-1"
        )


def test_a_lease_is_taken_and_the_row_read_in_one_statement(db):
    referral_id = submitted(db, "v1")
    now = datetime.now(UTC)
    row = outbox.claimed(db, referral_id, "worker-a", now)
    assert row is not None and row.id == referral_id
    assert row.lease_owner == "worker-a" and row.lease_until is not None
    assert row.plan["operations"] and row.decision["decisions"]
    assert outbox.claimed(db, referral_id, "worker-b", now) is None  # held
    after = now + outbox.LEASE + timedelta(seconds=1)
    taken = outbox.claimed(db, referral_id, "worker-b", after)  # the lease ran out
    assert taken is not None and taken.lease_owner == "worker-b"
    with db.session() as session:
        session.execute(update(Referral).values(status="written"))
    assert outbox.claimed(db, referral_id, "worker-c", after + outbox.LEASE * 2) is None


def test_a_writes_credentials_come_from_the_stored_launch(db, monkeypatch):
    services = services_for(db)
    context_id = open_launch(services)
    with db.session() as session:  # the screen's suggestions: not read for credentials
        session.execute(update(LaunchContext).values(shown={"suggestions": [{"kind": "x"}] * 50}))
    client = sessions.client_for(services, context_id)
    assert (client.base, client.access_token) == (ISS, "at-1")
    with pytest.raises(sessions.SessionEnded):
        sessions.client_for(services, "no-such-launch")

    def newest(*_args):  # the referral's own launch is live: no other launch is looked for
        raise AssertionError("the visit's newest launch was looked up")

    monkeypatch.setattr(sessions, "newest_context_for_visit", newest)
    mine = SimpleNamespace(
        id="r1", context_id=context_id, iss=ISS, patient_id="p1", encounter_id="e1"
    )
    assert sessions.client_for_referral(services, mine).access_token == "at-1"


def test_a_write_signed_in_this_request_uses_the_launch_it_read(db, monkeypatch):
    """Sign hands the delivery the launch context it read: its live token is used without
    reading the launch again; an expired one, or another launch's, sends it to the row."""
    services = services_for(db)
    context_id = open_launch(services)
    with db.read() as connection:
        loaded = DetachedReader(LaunchContext, "id").one(connection, id=context_id)
    assert loaded is not None
    reads: list[str] = []
    stored = sessions._stored_credentials

    def counted(services, context_id):
        reads.append(context_id)
        return stored(services, context_id)

    monkeypatch.setattr(sessions, "_stored_credentials", counted)
    mine = SimpleNamespace(
        id="r1", context_id=context_id, iss=ISS, patient_id="p1", encounter_id="e1"
    )
    assert sessions.client_for_referral(services, mine, loaded=loaded).access_token == "at-1"
    assert reads == []
    another = SimpleNamespace(id="another-launch")
    assert sessions.client_for_referral(services, mine, loaded=another).access_token == "at-1"
    assert reads == [context_id]
    loaded.access_expires_at = datetime.now(UTC) - timedelta(seconds=1)  # as this copy has it
    assert sessions.client_for_referral(services, mine, loaded=loaded).access_token == "at-1"
    assert reads == [context_id, context_id]  # the row as stored decides, not the copy


def test_an_append_on_postgresql_takes_the_lock_and_reads_the_head_in_one_round_trip(db):
    """The chain lock and the head: one query of two statements (PostgreSQL), the lock first;
    the head it reads is read_head's. SQLite keeps its file lock and its own read."""
    from sqlalchemy import event

    from smartapp.audit import chain

    with db.session() as session:
        referral_log.append(session, "launch", iss=ISS, patient_id="p1")
    executed: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        executed.append(statement.split()[0].upper())

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        with db.session() as session:
            head = chain.lock_and_read_head(session)
            assert head == chain.read_head(session)
            assert head[0] == 1 and len(head[1]) == 64
            assert session.info.get(chain._HELD)
            assert chain.lock_and_read_head(session) == head  # held: the head alone
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    if db.engine.dialect.name == "postgresql":  # the lock and the first head: no Core statement
        assert executed == ["SELECT", "SELECT"]
    else:  # BEGIN IMMEDIATE under the file lock, then each head read by Core
        assert executed == ["BEGIN", "SELECT", "SELECT", "SELECT"]


def test_a_kept_key_set_is_imported_once():
    document = {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "a"}]}
    first = smart._imported(document)
    assert smart._imported(document) is first
    fetched_again = {"keys": [dict(document["keys"][0])]}
    assert smart._imported(fetched_again) is not first


def attempts_logged(db: Database) -> list[dict]:
    with db.session() as session:
        return [e.data for e in referral_log.events(session) if e.type == "write-attempt"]


def test_an_attempt_is_recorded_on_the_row_under_its_lease_only(db):
    referral_id = submitted(db, "v1")
    row = outbox.claimed(db, referral_id, "worker-a")
    assert row is not None
    plan = WritePlan.from_json(row.plan)
    with db.session() as session:  # another worker took the lease meanwhile
        session.execute(update(Referral).values(lease_owner="worker-b"))
    lost = outbox._record_attempt(db, referral_id, "worker-a", plan, None)
    assert (lost.lease_owner, lost.attempts, lost.status) == ("worker-b", 0, "queued")
    assert lost.decision["decisions"] and attempts_logged(db) == []

    with db.session() as session:
        session.execute(update(Referral).values(lease_owner="worker-a"))
    failed = FhirError("The EHR did not answer in time.", transient=True, retry_after=30)
    queued = outbox._record_attempt(db, referral_id, "worker-a", plan, failed)
    assert (queued.status, queued.attempts, queued.lease_owner) == ("queued", 1, None)
    assert queued.last_error == "The EHR did not answer in time."
    assert queued.next_attempt_at > datetime.now(UTC) + timedelta(seconds=20)

    outbox.claimed(db, referral_id, "worker-a", queued.next_attempt_at + timedelta(seconds=1))
    for op in plan.operations:
        if op.is_rest_create:
            op.mark_written(f"id-{op.key[:4]}", "201")
    done = outbox._record_attempt(db, referral_id, "worker-a", plan, None)
    assert (done.status, done.attempts, done.last_error, done.lease_until) == (
        "written",
        2,
        None,
        None,
    )
    stored = outbox.get(db, referral_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.lease_owner) == ("written", 2, None)
    assert stored.plan == done.plan and stored.written == done.written != []
    logged = attempts_logged(db)
    assert [(e["attempt"], e["outcome"]) for e in logged] == [(1, "queued"), (2, "written")]
    assert logged[-1]["written"] == done.written


def statements_during(db: Database, call):
    """`call()`'s result and the statements it sent."""
    from sqlalchemy import event

    sent: list[str] = []

    def note(_conn, _cursor, statement, *_args):
        sent.append(statement.split()[0].upper())

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        return call(), sent
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def test_a_screen_reads_its_launch_and_its_visits_referral_in_one_statement(db):
    """Every screen, Sign and signed page reads its launch and the referral signed for its
    visit (in this launch or an earlier one) by one join on the visit key the launch keeps;
    another visit's referral, the patient's own without an encounter, or another patient's,
    is never the one found."""
    from smartapp.screen import service as screen

    services = services_for(db)
    context_id = open_launch(services)  # encounter e1 of p1
    submitted(db, visit_key(ISS, "e2", "p1"), encounter="e2")
    submitted(db, visit_key(ISS, None, "p1"), encounter=None)
    submitted(db, visit_key(ISS, None, "p2"), encounter=None, patient="p2")
    (context, found), sent = statements_during(db, lambda: screen.find_visit(services, context_id))
    assert context is not None and context.id == context_id and found is None
    assert sent == ["SELECT"]
    mine = submitted(db, visit_key(ISS, "e1", "p1"))
    (context, found), sent = statements_during(db, lambda: screen.find_visit(services, context_id))
    assert sent == ["SELECT"]
    assert context is not None and found is not None
    assert (found.id, found.encounter_id, context.visit_key) == (mine, "e1", found.visit_key)
    assert found.plan["operations"] and found.decision == outbox.get(db, mine).decision
    assert screen.find_visit(services, "not-a-launch") == (None, None)


def test_a_standalone_launchs_key_follows_the_visit_the_rules_chose(db):
    """A launch without an encounter is about the patient until the screen keeps the visit
    the rules chose; from then on its key is that visit's, and so is the referral found."""
    from smartapp.screen import service as screen

    services = services_for(db)
    context_id = open_launch(services, encounter=None)
    by_patient = submitted(db, visit_key(ISS, None, "p1"), encounter=None)
    chosen = submitted(db, visit_key(ISS, "e7", "p1"), encounter="e7")
    context, found = screen.find_visit(services, context_id)
    assert context is not None and found is not None and found.id == by_patient
    shown = {"pack": {"id": "default"}, "encounter": {"id": "e7"}, "notices": []}
    screen.record_shown(services, context, shown | {"suggestions": []})
    assert (context.encounter_id, context.visit_key) == ("e7", visit_key(ISS, "e7", "p1"))
    (context, found), sent = statements_during(db, lambda: screen.find_visit(services, context_id))
    assert sent == ["SELECT"] and found is not None and found.id == chosen
    assert context is not None and context.encounter_id == "e7"
    # a launch that has its encounter keeps it, and its key, whatever a later screen chose
    screen.record_shown(services, context, shown | {"encounter": {"id": "e9"}, "suggestions": []})
    context, found = screen.find_visit(services, context_id)
    assert context is not None and found is not None and found.id == chosen
    assert context.visit_key == visit_key(ISS, "e7", "p1")


def test_a_launch_kept_from_before_visit_keys_still_finds_its_visits_referral(db):
    """A launch stored before migration 0014 has no visit key: read by the key computed as
    before (two statements), it finds the same referral."""
    from smartapp.screen import service as screen

    services = services_for(db)
    context_id = open_launch(services)
    mine = submitted(db, visit_key(ISS, "e1", "p1"))
    with db.session() as session:
        session.execute(update(LaunchContext).values(visit_key=None))
    (context, found), sent = statements_during(db, lambda: screen.find_visit(services, context_id))
    assert context is not None and found is not None and found.id == mine
    assert sent == ["SELECT", "SELECT"]
