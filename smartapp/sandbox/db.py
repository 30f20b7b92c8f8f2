"""Database: engine, tables of the FHIR store, a key/value table, and write serialisation.

FHIR resources live in three Core tables (resources, superseded versions, search index) so
bulk seeding can use executemany; the OAuth tables are ORM models (see auth/models.py) on the
same metadata. SQLite is the default: WAL mode lets readers run beside the one writer, and a
process-wide lock serialises writers so a read-then-write transaction never hits SQLITE_BUSY.
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

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        connect_args: dict = {}
        if self.is_sqlite:
            connect_args = {"check_same_thread": False, "timeout": 30}
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        self.session = scoped_session(sessionmaker(bind=self.engine, expire_on_commit=False))
        self.write_lock = threading.RLock()

    def create_all(self) -> None:
        """Create missing tables."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (its own short transaction)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One all-or-nothing write transaction, serialised with every other writer."""
        with self.write_lock, self.engine.begin() as conn:
            yield conn

    def get_meta(self, conn: Connection, key: str) -> str | None:
        """A value from the key/value table."""
        return conn.execute(select(kv.c.value).where(kv.c.key == key)).scalar_one_or_none()

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        """Insert or replace a key/value row."""
        conn.execute(kv.delete().where(kv.c.key == key))
        conn.execute(kv.insert().values(key=key, value=value))


def _tune_sqlite(engine: Engine) -> None:
    """WAL, relaxed fsync, and explicit BEGIN (pysqlite's implicit one breaks isolation)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:  # a sqlite3.Connection
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")
