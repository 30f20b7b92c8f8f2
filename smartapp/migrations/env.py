"""Alembic environment for Handoff's own database (not the sandbox's). Run through
`smartapp.db.Database.migrate()` (on start) or `handoff db upgrade`; the connection is passed
in `config.attributes["connection"]`."""

from __future__ import annotations

from alembic import context

from smartapp.db import Base

target_metadata = Base.metadata


def run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
