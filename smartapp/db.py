"""Handoff's own store: launch contexts, pending authorizations, referrals, the referral log.

Plain SQLAlchemy 2.0 so the same models serve the web app, the CLI and background workers.
SQLite by default; PostgreSQL when DATABASE_URL says so.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    inspect,
    make_url,
    text,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    sessionmaker,
)

from smartapp.jsonio import read_json, write_json


def utcnow() -> datetime:
    return datetime.now(UTC)


def stored_utc(moment: datetime) -> datetime:
    """A stored time as UTC: SQLite gives it back without its zone (PostgreSQL with it)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


#: session.info: a callable run with the session before each of its flushes (a commit flushes
#: only a session with ORM changes): `smartapp.audit.chain` links the events appended to it.
BEFORE_FLUSH = "handoff.before_flush"


class UnitOfWork(Session):
    """The sessions `Database.session` gives: a flush (explicit, before a query, at commit)
    first runs the session's `BEFORE_FLUSH` callable, even when no ORM object changed: the
    referral log's events are inserted by Core there, not flushed as ORM objects (an ORM
    flush of each cost more than linking and hashing it). At commit SQLAlchemy flushes only
    a session with ORM changes; its `before_commit` event covers the others (the chain
    listens to it)."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        before = self.info.get(BEFORE_FLUSH)
        if before is not None:
            before(self)
        super().flush(objects)


class PendingAuthorization(Base):
    """An authorization request in flight: its state, PKCE verifier and nonce (single use)."""

    __tablename__ = "pending_authorization"

    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_id: Mapped[str] = mapped_column(String(64), index=True)
    registration_id: Mapped[str] = mapped_column(String(100))
    iss: Mapped[str] = mapped_column(String(500))
    code_verifier: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(64))
    token_endpoint: Mapped[str] = mapped_column(String(500))
    jwks_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LaunchContext(Base):
    """One launch: patient, encounter, user, granted scopes; tokens encrypted at rest."""

    __tablename__ = "launch_context"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_id: Mapped[str] = mapped_column(String(64), index=True)
    registration_id: Mapped[str] = mapped_column(String(100))
    iss: Mapped[str] = mapped_column(String(500))
    patient_id: Mapped[str] = mapped_column(String(200))
    encounter_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    need_patient_banner: Mapped[int] = mapped_column(Integer, default=1)
    token_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    token_endpoint: Mapped[str] = mapped_column(String(500))
    access_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # What the screen showed last (the suggestions as JSON), so a signature refers to it.
    shown: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The visit's key (writeback.referral.referral_key of iss, encounter or patient, "visit"),
    # kept as the encounter is: the launch and its visit's referral are read by one join.
    visit_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Referral(Base):
    """A signed decision and the writes it needs: stored before any write is tried, then
    worked by the outbox until every write has landed (or was refused for good)."""

    __tablename__ = "referral"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # One referral per (EHR, encounter): a double click or re-sign finds this row.
    visit_key: Mapped[str] = mapped_column(String(64), unique=True)
    context_id: Mapped[str] = mapped_column(String(64), index=True)
    iss: Mapped[str] = mapped_column(String(500))
    patient_id: Mapped[str] = mapped_column(String(200))
    encounter_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    decision: Mapped[dict] = mapped_column(JSON)
    # The write plan (smartapp.writeback.resources.build_plan): each resource, its mode and status.
    plan: Mapped[dict] = mapped_column(JSON)
    # queued (to write) | written | failed (refused for good) | held (EHR cannot take it)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A worker's claim, so two workers (or a worker and the web app) never write at once.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Indexed: the coach team's pages read the referrals signed lately (handoffs.current).
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def written(self) -> list[dict]:
        """What the EHR holds now: type, id, status per resource written over REST."""
        return [
            {"resourceType": op["type"], "id": op["id"], "status": op.get("http", "")}
            for op in self.plan.get("operations", [])
            if op["mode"] == "rest"
            and op["status"] == "written"
            and op.get("method", "POST") == "POST"
        ]

    @property
    def kept(self) -> list[dict]:
        """What stays in Handoff's own store because the EHR cannot take it."""
        return [op for op in self.plan.get("operations", []) if op["mode"] == "local"]


class CoachHandoff(Base):
    """The coach team's side of a warm handoff (mirrors the FHIR Task's status); changed only
    by `smartapp.handoffs.service.record` (the lifecycle's rules in `handoffs.lifecycle`)."""

    __tablename__ = "coach_handoff"

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # FHIR Task status: requested, accepted, in-progress, completed, rejected, cancelled.
    status: Mapped[str] = mapped_column(String(20), default="requested", index=True)
    # The owner: a coach (coach_ref a Practitioner or urn:staff reference) or a partner.
    coach_ref: Mapped[str | None] = mapped_column(String(500), nullable=True, index=True)
    coach_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    contacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    contact_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    linked_program: Mapped[str | None] = mapped_column(String(300), nullable=True)
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Issue 11: the steps between (lifecycle.BUSINESS_STEPS), who owns it, contact attempts,
    # the catalog program and partner, and what shows the outcome (a reference or text).
    business_status: Mapped[str | None] = mapped_column(String(40), nullable=True)
    owner_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    contact_result: Mapped[str | None] = mapped_column(String(20), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    linked_program_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    partner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    output: Mapped[str | None] = mapped_column(String(500), nullable=True)


class FollowupContact(Base):
    """One planned contact after the ED visit (day 1, 3, 7, 30 by default: FOLLOWUP_DAYS),
    due at the visit's day plus `day`; done when an attempt is recorded against it."""

    __tablename__ = "followup_contact"
    # The contacts not made yet, by due time: the supervisor's overdue follow-ups are one
    # range of it, not every contact ever planned.
    __table_args__ = (Index("ix_followup_contact_open", "done_at", "due_at"),)

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[str | None] = mapped_column(String(20), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    by_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    by_name: Mapped[str | None] = mapped_column(String(200), nullable=True)


class FollowupOutcome(Base):
    """The outcome at 7, 30 or 90 days after the visit (reached, in treatment, attending the
    program, declined, lost to contact): one per referral and day; a later entry replaces it
    (the log keeps every one)."""

    __tablename__ = "followup_outcome"

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    by_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    by_name: Mapped[str | None] = mapped_column(String(200), nullable=True)


class StaffSession(Base):
    """A signed-in staff member (coach, auditor, program manager), kept server side: the
    browser holds only a random token whose SHA-256 is this row's id, so signing out (or an
    idle or absolute limit) ends the session for every copy of the cookie."""

    __tablename__ = "staff_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sub: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(300))
    user_ref: Mapped[str] = mapped_column(String(500))
    roles: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StaffSignIn(Base):
    """A staff sign-in in flight: the OpenID Connect client's state data (PKCE verifier, nonce,
    redirect URI) under its state key, server side; the browser holds only the key."""

    __tablename__ = "staff_sign_in"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    data: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Database:
    """An engine and a session factory; `session()` is a unit of work that commits or rolls back."""

    def __init__(self, url: str, *, pre_ping: bool = False) -> None:
        """`pre_ping`: test each pooled connection with a round trip before use (DATABASE_
        PRE_PING). Off by default: a launch checks out dozens of sessions, and a ping each was
        a visible part of its CPU. SQLite (a file) never needs it. A server database renews
        connections after POOL_RECYCLE_SECONDS (before the usual idle cuts of firewalls and
        proxies), and a connection found dead invalidates the whole pool, so after a database
        restart one request fails and the next ones get fresh connections; turn pre-ping on
        where even that one must not fail."""
        self.url = url
        sqlite = url.startswith("sqlite")
        connect_args = {"check_same_thread": False} if sqlite else {}
        pool = {} if sqlite else {"pool_pre_ping": pre_ping, "pool_recycle": POOL_RECYCLE_SECONDS}
        # hide_parameters: a database error's message (logged with its traceback) must not
        # carry the statement's values: patient ids, PKCE verifiers, states, nonces.
        self.engine = create_engine(
            url,
            connect_args=connect_args,
            hide_parameters=True,
            json_serializer=write_json,
            json_deserializer=read_json,
            **pool,
        )
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # Reads on a server database run outside a transaction (no BEGIN and ROLLBACK round
        # trips around each): see `read`. SQLite's driver begins no transaction for a SELECT.
        self._reader = (
            self.engine if sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._factory = sessionmaker(self.engine, class_=UnitOfWork, expire_on_commit=False)
        if sqlite:
            event.listen(self._factory, "before_flush", _writer_lock_first)
            event.listen(self._factory, "do_orm_execute", _writer_lock_first_for_dml)

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, or SQLite in memory)."""
        return sqlite_file(self.url)

    def create_all(self) -> None:
        """Bring the schema to the newest migration (kept as create_all for callers)."""
        self.migrate()

    def exists(self) -> bool:
        """True when Handoff's schema is there; never creates a SQLite file to find out."""
        path = self.sqlite_file
        if path is not None and not path.is_file():
            return False
        with self.engine.connect() as connection:
            return inspect(connection).has_table("alembic_version")

    def migrate(self, revision: str = "head") -> None:
        """Run Alembic migrations up to `revision` on this database, exactly once however many
        processes start together: they queue on a lock (a file lock beside a SQLite file, an
        advisory lock on PostgreSQL) and the later ones find the schema already there."""
        from alembic import command

        path = self.sqlite_file
        if path is not None:
            _private_sqlite_files(path)
        with _file_lock(path), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": MIGRATE_LOCK})
            config = alembic_config()
            config.attributes["connection"] = connection
            existing = set(inspect(connection).get_table_names())
            if existing & set(Base.metadata.tables) and "alembic_version" not in existing:
                raise RuntimeError(
                    f"{self.url}: this database was made before Handoff had migrations; "
                    "move it aside (it holds no data from a release) and start again."
                )
            command.upgrade(config, revision)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def read(self) -> Connection:
        """A connection for reads only (use it as a context manager): on PostgreSQL in
        autocommit, so a read costs its statements alone, not a BEGIN and a ROLLBACK besides
        (about a quarter of a short read's CPU, and two round trips). Nothing is lost by it: at
        READ COMMITTED, PostgreSQL's default, every statement sees its own snapshot inside a
        transaction too. Never write through it (each statement would commit on its own)."""
        return self._reader.connect()

    @contextmanager
    def statement(self) -> Iterator[Connection | Session]:
        """Where one statement that writes runs, committed on its own (run that one alone): on
        PostgreSQL a connection in autocommit (a lone statement is atomic: no BEGIN and COMMIT
        round trips, no ORM unit of work); on SQLite a unit of work as `session` gives, so the
        statement takes the referral log's writer lock first (`_writer_lock_first`)."""
        if self._reader is self.engine:  # SQLite
            with self.session() as session:
                yield session
        else:
            with self._reader.connect() as connection:
                yield connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def alembic_config():
    """Alembic's config pointing at smartapp/migrations (shipped inside the package)."""
    from pathlib import Path

    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def _writer_lock_first(session: Session, _context, _instances) -> None:
    """SQLite: a session about to write takes the referral log's writer lock (the process lock,
    then BEGIN IMMEDIATE: smartapp.audit.chain.lock) before its first INSERT/UPDATE/DELETE,
    whether or not it appends to the log. Without this, a session that wrote a row first held
    SQLite's write lock and then waited for the process lock to append its event, while another
    thread held the process lock and waited for SQLite's write lock: both stalled until the
    busy timeout and a request failed ("database is locked") under load."""
    if session.new or session.dirty or session.deleted:
        from smartapp.audit import chain

        chain.lock(session)


def _writer_lock_first_for_dml(state) -> None:
    """The same for a Core INSERT/UPDATE/DELETE run through the session (e.g. a lease claim)."""
    if state.is_insert or state.is_update or state.is_delete:
        from smartapp.audit import chain

        chain.lock(state.session)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL and a busy timeout so the web app's workers and the outbox worker can share one
    SQLite file (the timeout first: switching a fresh file to WAL waits for the lock instead of
    failing). 30 s, not 5: under load (benchmarks/load.py, 16+ concurrent physicians on two
    workers) a writer of another process could wait more than 5 s behind the others and the
    request failed with "database is locked"."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


# How long a SQLite writer waits for another process's write to end (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30000

# A server database's pooled connections are renewed after this long (seconds): under the
# common 30-60 minute idle cuts of firewalls, proxies and managed databases.
POOL_RECYCLE_SECONDS = 1500

# The PostgreSQL advisory lock migrations queue on (any number; the same in every process).
MIGRATE_LOCK = 0x48414E44  # "HAND"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (absolute), or None for other databases and `sqlite://`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def _private_sqlite_files(path: Path) -> None:
    """The database file 0600 before SQLite first opens it (SQLite gives its -wal and -shm
    files the database file's mode), in a 0700 folder when Handoff creates the folder; files
    made by an older version are tightened too."""
    from smartapp.startup import private_file, private_folder

    private_folder(path.parent, tighten=False)
    private_file(path)
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            companion.chmod(0o600)


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on `<database>.lock` beside a SQLite file (nothing for PostgreSQL)."""
    if path is None:
        yield
        return
    from smartapp.startup import private_file

    lock = private_file(path.with_name(path.name + ".lock"))
    with lock.open("r") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# The referral log's tables live with the audit code (hash chain, checkpoints) and the partner
# tables (consents to share, partner tokens) with the partner code; importing them here keeps
# `LogEvent` reachable as `smartapp.db.LogEvent` and puts every table in `Base.metadata`.
import smartapp.cdshooks.store  # noqa: E402, F401  (CDS Hooks: JWT ids used)
import smartapp.partners.models  # noqa: E402, F401
from smartapp.audit.models import LogEvent  # noqa: E402, F401
