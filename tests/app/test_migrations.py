"""Schema migrations: an empty database migrated to head matches the models exactly, on
SQLite and on PostgreSQL; a database made without migrations is refused with a clear message."""

from __future__ import annotations

import os
import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, make_url, text

from smartapp.db import Base, Database, alembic_config


def assert_matches_models(database: Database) -> None:
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    script = ScriptDirectory.from_config(alembic_config())
    revisions = [r.revision for r in script.walk_revisions()]  # newest first
    assert revisions[-1] == "0001" and len(script.get_heads()) == 1  # one line of migrations
    assert database.current_revision() == script.get_current_head()


def test_sqlite_migrates_to_the_models(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'h.sqlite'}")
    database.migrate()
    assert_matches_models(database)
    database.migrate()  # idempotent


def test_database_made_without_migrations_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    Base.metadata.create_all(create_engine(url))
    with pytest.raises(RuntimeError, match="before Handoff had migrations"):
        Database(url).migrate()


def test_postgresql_migrates_to_the_models():
    base = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    schema = f"mig_{secrets.token_hex(4)}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        database = Database(url.render_as_string(hide_password=False))
        database.migrate()
        assert_matches_models(database)
        database.engine.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
