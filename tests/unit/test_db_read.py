"""`Database.read`: reads on PostgreSQL run outside a transaction (no BEGIN and ROLLBACK
round trips), and the pool's connections go back to the unit of work transactional; on
SQLite it is the engine's own connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import func, insert, select

from smartapp.db import Database, PendingAuthorization
from tests.pgschema import migrated

PENDING = {
    "state": "s-1",
    "browser_id": "b",
    "registration_id": "r",
    "iss": "http://ehr/fhir",
    "code_verifier": "v",
    "nonce": "n",
    "token_endpoint": "http://ehr/token",
    "jwks_uri": None,
}


def _count(connection) -> int:
    return connection.execute(select(func.count()).select_from(PendingAuthorization)).scalar()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_read_sees_what_was_committed_and_nothing_rolled_back(kind: str, tmp_path: Path):
    with migrated(kind, tmp_path, "dbread") as database:
        with database.session() as session:
            session.execute(insert(PendingAuthorization), PENDING)
        with pytest.raises(RuntimeError), database.session() as session:
            session.execute(insert(PendingAuthorization), PENDING | {"state": "s-2"})
            raise RuntimeError("the unit of work fails")
        with database.read() as connection:
            assert _count(connection) == 1


def test_a_postgresql_read_opens_no_transaction_and_hands_back_a_transactional_connection(
    tmp_path: Path,
):
    with migrated("postgresql", tmp_path, "dbread") as database:
        database.engine.pool.dispose()  # one pooled connection, for both uses below
        with database.read() as connection:
            assert _count(connection) == 0
            read_driver = connection.connection.driver_connection
            # After its SELECT the connection is idle, not "idle in transaction".
            assert read_driver.info.transaction_status == TransactionStatus.IDLE
        # The same pooled connection, back in a unit of work: a transaction again, so a
        # failing unit of work leaves nothing behind.
        with pytest.raises(RuntimeError), database.session() as session:
            session.execute(insert(PendingAuthorization), PENDING)
            driver = session.connection().connection.driver_connection
            assert driver is read_driver
            assert driver.autocommit is False
            assert driver.info.transaction_status == TransactionStatus.INTRANS
            raise RuntimeError("the unit of work fails")
        with database.read() as connection:
            assert _count(connection) == 0


def test_a_sqlite_read_is_the_engine_s_own_connection(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'h.sqlite'}")
    try:
        database.migrate()
        with database.read() as connection:
            assert connection.engine is database.engine
            assert _count(connection) == 0
    finally:
        database.engine.dispose()
