"""Fixtures for the referral log's audit tests: a signing key, a SQLite log, a PostgreSQL
schema of its own per test (skipped with a reason when HANDOFF_TEST_POSTGRES_URL is unset)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.audit.signing import Signer, load_signer
from smartapp.db import Database

POSTGRES_ENV = "HANDOFF_TEST_POSTGRES_URL"
EVERY = 10

# A realistic mix, so neighbouring events have different types (the report must name the right one).
TYPES = (
    "launch",
    "suggestions-shown",
    "decision",
    "write-attempt",
    "write-held",
    "audit-read",
    "rules-reloaded",
)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "audit-signing-key.pem"


@pytest.fixture
def signer(key_path: Path) -> Signer:
    return load_signer(key_path)


@pytest.fixture
def public_key_file(tmp_path: Path, signer: Signer) -> Path:
    path = tmp_path / "audit-public.pem"
    path.write_text(signer.public_pem())
    return path


def open_log(url: str, signer: Signer | None, every: int = EVERY) -> Database:
    db = Database(url)
    db.create_all()
    if signer is not None:
        chain.configure(db, signer=signer, every=every)
    return db


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'handoff.sqlite'}"


@pytest.fixture
def sqlite_db(sqlite_url: str, signer: Signer) -> Iterator[Database]:
    db = open_log(sqlite_url, signer)
    yield db
    db.engine.dispose()


def fill(db: Database, count: int, *, start: int = 1) -> None:
    """`count` events, one per unit of work, cycling through TYPES."""
    for i in range(start, start + count):
        with db.session() as session:
            referral_log.append(
                session,
                TYPES[(i - 1) % len(TYPES)],
                user_ref="Practitioner/dr-1",
                iss="https://ehr.example.org/fhir",
                patient_id=f"pt-{i % 3}",
                encounter_id=f"enc-{i % 3}",
                data={"n": i, "note": "héllo ✓"},
            )


def postgres_base_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, dropped afterwards; the URL points into it.

    The session time zone is deliberately not UTC: hashes must not depend on it.
    """
    base = postgres_base_url()
    if not base:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    pytest.importorskip(
        "psycopg", reason="PostgreSQL tests need psycopg (pip install 'psycopg[binary]')"
    )
    schema = f"handoff_audit_{secrets.token_hex(6)}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict(
        {"options": f"-csearch_path={schema} -cTimeZone=America/Chicago"}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
