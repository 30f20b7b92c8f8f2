"""Fixtures for the scale tests: a migrated SQLite log with a signing key and the chain's clock
under the test's control (PostgreSQL where HANDOFF_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smartapp.audit import chain
from smartapp.audit.signing import Signer, load_signer
from smartapp.db import Database
from tests.console import logdata
from tests.pgschema import migrated_schema

EVERY = 10


@pytest.fixture
def clock(monkeypatch) -> logdata.Clock:
    found = logdata.Clock()
    monkeypatch.setattr(chain, "utcnow", found)
    return found


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_signer(tmp_path / "keys" / "audit-signing-key.pem")


@pytest.fixture
def db(tmp_path: Path, signer: Signer) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.migrate()
    chain.configure(database, signer=signer, every=EVERY)
    yield database
    database.engine.dispose()


@pytest.fixture
def pg(signer: Signer) -> Iterator[Database]:
    """A migrated PostgreSQL schema of its own, its chain signed as `db`'s (tests.pgschema)."""
    with migrated_schema("scale") as database:
        chain.configure(database, signer=signer, every=10)
        yield database
