"""A fresh PostgreSQL schema for one test, in the server HANDOFF_TEST_POSTGRES_URL names
(`.ci/run` sets it; the tests that need it skip without): migrated, dropped afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from smartapp.db import Database

POSTGRES = os.environ.get("HANDOFF_TEST_POSTGRES_URL")


@contextmanager
def migrated_schema(prefix: str) -> Iterator[Database]:
    """A database on a new schema `<prefix>_<random>` with Handoff's migrations applied; the
    schema is dropped when the block ends."""
    assert POSTGRES, "HANDOFF_TEST_POSTGRES_URL is not set"
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={schema}"})
    database = Database(url.render_as_string(hide_password=False))
    try:
        database.migrate()
        yield database
    finally:
        database.engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def migrated(kind: str, folder: Path, prefix: str) -> Iterator[Database]:
    """A migrated database of `kind`: "sqlite", a file in `folder`; "postgresql", a fresh
    schema (`migrated_schema`), the test skipped where HANDOFF_TEST_POSTGRES_URL is not set."""
    if kind == "sqlite":
        database = Database(f"sqlite:///{folder / 'handoff.sqlite'}")
        database.migrate()
        try:
            yield database
        finally:
            database.engine.dispose()
        return
    if not POSTGRES:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    with migrated_schema(prefix) as database:
        yield database
