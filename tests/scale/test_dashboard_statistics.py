"""After a large catch-up, the dashboard's kept tables get fresh planner statistics on
PostgreSQL (VACUUM (ANALYZE): `store.refresh_statistics`), not at autovacuum's next pass; a
small catch-up leaves them to autovacuum; SQLite is left as it is."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import text

from smartapp.db import Database
from smartapp.staff.dashboard import store
from smartapp.staff.dashboard.service import bring_up_to_date
from tests.pgschema import POSTGRES

sys.path.insert(0, "benchmarks")
import scale_log  # noqa: E402

KEPT = ("log_visit_summary", "log_visit_figure", "log_visit_text")

needs_postgres = pytest.mark.skipif(
    not POSTGRES, reason="HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)"
)


def maintained(db: Database) -> dict[str, tuple[bool, bool]]:
    """Each kept table of this schema: (vacuumed by hand, analyzed by hand)."""
    assert {t.name for t in (store._TABLE, store.FIGURES, store.TEXTS)} == set(KEPT)
    with db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT relname, last_vacuum IS NOT NULL, last_analyze IS NOT NULL "
                "FROM pg_stat_user_tables WHERE schemaname = current_schema() "
                "AND relname = ANY(:names)"
            ),
            {"names": list(KEPT)},
        ).all()
    return {name: (vacuumed, analyzed) for name, vacuumed, analyzed in rows}


@needs_postgres
def test_a_large_catch_up_leaves_the_kept_tables_analyzed(pg):
    scale_log.generate(pg, 1200, sign=False)
    bring_up_to_date(pg, unit=200, refresh_after=3)  # 6 units or more: more than 3
    assert maintained(pg) == dict.fromkeys(KEPT, (True, True))
    with pg.engine.connect() as connection:  # the planner knows the rows are there
        estimate = connection.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = 'log_visit_figure'::regclass")
        ).scalar_one()
        rows = connection.execute(text("SELECT count(*) FROM log_visit_figure")).scalar_one()
    assert rows > 50 and estimate == rows


@needs_postgres
def test_a_small_catch_up_leaves_them_to_autovacuum(pg):
    scale_log.generate(pg, 1200, sign=False)
    bring_up_to_date(pg, unit=200, refresh_after=100)
    assert maintained(pg) == dict.fromkeys(KEPT, (False, False))


def test_a_database_that_refuses_leaves_a_warning_not_an_error(caplog):
    """A real refusal: nothing listens on the port (a role that does not own the tables only
    gets PostgreSQL's warning, and the tables keep autovacuum's statistics)."""
    unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:9/handoff")
    try:
        store.refresh_statistics(unreachable)
    finally:
        unreachable.engine.dispose()
    assert "the dashboard's tables were not analyzed: OperationalError" in caplog.text


def test_sqlite_is_left_as_it_is(db):
    scale_log.generate(db, 600, sign=False)
    bring_up_to_date(db, unit=100, refresh_after=1)
    with db.engine.connect() as connection:
        stats = connection.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).scalar_one()
    assert stats == 0
