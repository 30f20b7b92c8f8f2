"""Database: engine, tables of the FHIR store, a key/value table, and write serialisation.

FHIR resources live in three Core tables (resources, superseded versions, search index) so
bulk seeding can use executemany; the OAuth tables are ORM models (see auth/models.py) on the
same metadata. SQLite is the default: WAL mode lets readers run beside the one writer, and a
process-wide lock serialises writers so a read-then-write transaction never hits SQLITE_BUSY
(across worker processes, writes begin IMMEDIATE and wait on SQLite's busy timeout).

One connection per request: reads, writes and the OAuth store all go through the thread's
scoped session (removed at the end of each request), so a request never holds one pooled
connection while it waits for a second (a pool of 5 serves any number of concurrent requests;
before, the token check held one and the FHIR read took another, and 32 concurrent physicians
exhausted the pool).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker


class Base(DeclarativeBase):
    """Declarative base shared by every sandbox table."""


resources = Table(
    "fhir_resource",
    Base.metadata,
    Column("type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("patient_id", String(64)),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=False),
)
Index("ix_fhir_resource_patient", resources.c.patient_id, resources.c.type)

history = Table(
    "fhir_history",
    Base.metadata,
    Column("type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=False),
)

search_index = Table(
    "fhir_search_index",
    Base.metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255)),
    Column("value", String(512)),
    Column("lo", BigInteger),
    Column("hi", BigInteger),
)
Index(
    "ix_fhir_index_value",
    search_index.c.res_type,
    search_index.c.param,
    search_index.c.value,
    search_index.c.system,
    search_index.c.res_id,
)
Index("ix_fhir_index_lo", search_index.c.res_type, search_index.c.param, search_index.c.lo)
Index("ix_fhir_index_hi", search_index.c.res_type, search_index.c.param, search_index.c.hi)
# Per-resource lookups: deleting a resource's rows, and _sort's correlated min(lo)/min(value).
Index(
    "ix_fhir_index_resource",
    search_index.c.res_type,
    search_index.c.res_id,
    search_index.c.param,
    search_index.c.lo,
)

kv = Table(
    "sandbox_meta",
    Base.metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


class Database:
    """Engine, ORM session factory and the writer lock for one sandbox database."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        """`pool_size`: the engine's pool (no overflow) when given, else SQLAlchemy's default."""
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        connect_args: dict = {}
        if self.is_sqlite:
            connect_args = {"check_same_thread": False, "timeout": 30}
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        pool: dict[str, Any] = {}
        if pool_size is not None:
            pool = {"pool_size": pool_size, "max_overflow": 0}
        self.engine: Engine = create_engine(url, connect_args=connect_args, **pool)
        # This thread's write(): how deep, and whether it holds the writer lock.
        self._writing = threading.local()
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        event.listen(self.engine, "begin", self._on_begin)
        self.session = scoped_session(sessionmaker(bind=self.engine, expire_on_commit=False))
        self.write_lock = threading.RLock()

    def create_all(self) -> None:
        """Create missing tables."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """The thread's session connection for reads: inside the transaction already open in
        this request (one snapshot, one connection), else a short one of its own."""
        session = self.session()
        started = not session.in_transaction()
        try:
            yield session.connection()
        except BaseException:
            if started:
                session.rollback()
            raise
        if started:
            session.commit()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One all-or-nothing write transaction on the thread's session connection, serialised
        with every other writer of this process; a write inside a write joins it.

        The connection is checked out before the writer lock is taken (the begin event takes
        it): a thread holding the lock never waits for the pool, so writers queued on the lock
        while holding their connection cannot starve it (a pool of 5, 64 requests)."""
        local = self._writing
        depth = getattr(local, "depth", 0)
        if depth:
            local.depth = depth + 1
            try:
                yield self.session.connection()
            finally:
                local.depth = depth
            return
        session = self.session()
        # End any read snapshot first: SQLite refuses to turn a read transaction into a write
        # one once another writer has committed since it began.
        session.commit()
        local.depth = 1
        try:
            yield session.connection()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            local.depth = 0
            if getattr(local, "locked", False):
                local.locked = False
                self.write_lock.release()

    def _on_begin(self, conn: Connection) -> None:
        """A transaction begins on a checked-out connection: inside write(), take the writer
        lock now; on SQLite, BEGIN explicitly (IMMEDIATE for a write: it takes SQLite's write
        lock at once, waiting on the busy timeout, instead of failing to upgrade a snapshot
        another process made stale)."""
        local = self._writing
        writing = bool(getattr(local, "depth", 0))
        if writing and not getattr(local, "locked", False):
            self.write_lock.acquire()
            local.locked = True
        if self.is_sqlite:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    def get_meta(self, conn: Connection, key: str) -> str | None:
        """A value from the key/value table."""
        return conn.execute(select(kv.c.value).where(kv.c.key == key)).scalar_one_or_none()

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        """Insert or replace a key/value row."""
        conn.execute(kv.delete().where(kv.c.key == key))
        conn.execute(kv.insert().values(key=key, value=value))


def _tune_sqlite(engine: Engine) -> None:
    """WAL, relaxed fsync, and no implicit BEGIN (pysqlite's breaks isolation; Database's
    begin event issues its own)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:  # a sqlite3.Connection
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
