"""Handoff's own store: launch contexts, pending authorizations, referrals, the referral log.

Plain SQLAlchemy 2.0 so the same models serve the web app, the CLI and background workers.
SQLite by default; PostgreSQL when DATABASE_URL says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


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
    # The write plan (smartapp.writeback.build_plan): each resource, its mode and status.
    plan: Mapped[dict] = mapped_column(JSON)
    # queued (to write) | written | failed (refused for good) | held (EHR cannot take it)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A worker's claim, so two workers (or a worker and the web app) never write at once.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
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
    """The coach team's side of a warm handoff (mirrors the FHIR Task's status)."""

    __tablename__ = "coach_handoff"

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # FHIR Task status: requested, accepted, in-progress, completed, rejected, cancelled.
    status: Mapped[str] = mapped_column(String(20), default="requested", index=True)
    coach_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    coach_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    contacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    contact_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    linked_program: Mapped[str | None] = mapped_column(String(300), nullable=True)
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Database:
    """An engine and a session factory; `session()` is a unit of work that commits or rolls back."""

    def __init__(self, url: str) -> None:
        self.url = url
        connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Bring the schema to the newest migration (kept as create_all for callers)."""
        self.migrate()

    def migrate(self, revision: str = "head") -> None:
        """Run Alembic migrations up to `revision` on this database."""
        from alembic import command

        with self.engine.begin() as connection:
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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL and a busy timeout so the web app and a worker can share one SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# The referral log's tables live with the audit code (hash chain, checkpoints); importing them
# here keeps `LogEvent` reachable as `smartapp.db.LogEvent` and puts both tables in `Base.metadata`.
from smartapp.audit.models import LogEvent  # noqa: E402, F401
