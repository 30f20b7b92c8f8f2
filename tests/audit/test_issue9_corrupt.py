"""Issue 9, item 30: a damaged log row (`data` not JSON, an `at` that is not a time) is named by
`handoff audit verify` (exit 1, no traceback), marked as broken on the console's pages, and left
out of exports with its seq named; nothing answers 500."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from smartapp.audit.cli import audit
from smartapp.audit.export import csv_records
from smartapp.services import current_services
from tests.audit.conftest import fill
from tests.audit.test_verify import EVENTS, run_verify, type_at
from tests.console import logdata
from tests.staff_login import STAFF_KEY, staff_session_token

DAMAGE = {
    "data": ("data", "{not json", "its data is not JSON"),
    "data-not-object": ("data", "[1, 2]", "its data is not a JSON object"),
    "at": ("at", "last tuesday", "its time ('last tuesday') is not a date and time"),
}


def damage(engine, seq: int, how: str) -> None:
    column, value, _ = DAMAGE[how]
    with engine.begin() as connection:
        connection.execute(
            text(f"UPDATE log_event SET {column} = :value WHERE seq = :seq"),
            {"value": value, "seq": seq},
        )


@pytest.fixture
def log_db(sqlite_db):
    fill(sqlite_db, EVENTS)
    return sqlite_db


@pytest.mark.parametrize("mode", ["in-process", "subprocess"])
@pytest.mark.parametrize("how", list(DAMAGE))
def test_verify_names_the_damaged_event(log_db, sqlite_url, public_key_file, how, mode):
    damage(log_db.engine, 7, how)
    outcome = run_verify(mode, sqlite_url, public_key_file)
    assert outcome.code == 1, outcome
    assert "Traceback" not in outcome.stdout + outcome.stderr
    line = outcome.stdout.strip()
    assert line.startswith(
        f"BROKEN at #7 ({type_at(7)}): event #7 ({type_at(7)}) cannot be read: {DAMAGE[how][2]}"
    ), line


def test_a_damaged_checkpoint_row_is_named(log_db, sqlite_url, public_key_file):
    with log_db.engine.begin() as connection:
        connection.execute(text("UPDATE log_checkpoint SET at = 'soon' WHERE seq = 20"))
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1 and "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.stdout.startswith(
        "BROKEN at #11: checkpoint #20 cannot be read: its time ('soon') is not a date and time; "
        "events #11..#20 are not proven by it"
    ), outcome.stdout


def test_a_damaged_row_after_a_gap_still_names_the_gap(log_db, sqlite_url, public_key_file):
    damage(log_db.engine, 9, "data")
    with log_db.engine.begin() as connection:
        connection.execute(text("DELETE FROM log_event WHERE seq = 8"))
    outcome = run_verify("in-process", sqlite_url, public_key_file)
    assert outcome.code == 1 and outcome.stdout.startswith("BROKEN at #8: event #8 removed")


def test_cli_export_leaves_the_damaged_event_out_and_says_so(log_db, sqlite_url, tmp_path):
    damage(log_db.engine, 5, "at")
    damage(log_db.engine, 6, "data")
    out = tmp_path / "export.csv"
    result = CliRunner().invoke(
        audit,
        [
            "--instance-path",
            str(tmp_path / "instance"),
            "export",
            "--format",
            "csv",
            "--out",
            str(out),
            "--database-url",
            sqlite_url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "left out 2 event(s) that cannot be read: #5, #6" in result.stderr
    seqs = [r.seq for r in csv_records(io.StringIO(out.read_text()))]
    assert seqs == [s for s in range(1, EVENTS + 1) if s not in (5, 6)]


# -- the console -------------------------------------------------------------------------------


def console_app(tmp_path, clock):
    from tests.console.conftest import STAFF, make_app

    app = make_app(tmp_path / "instance")
    with app.app_context():
        logdata.fill(current_services().db, clock)
        engine = current_services().db.engine
    client = app.test_client()
    with client.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(app, STAFF["auditor"])
    return app, engine, client


@pytest.fixture
def clock(monkeypatch) -> logdata.Clock:
    from smartapp.audit import chain

    found = logdata.Clock()
    monkeypatch.setattr(chain, "utcnow", found)
    return found


@pytest.mark.parametrize("how", ["data", "at"])
def test_console_pages_show_the_damaged_event_as_broken(tmp_path, clock, how):
    app, engine, auditor = console_app(tmp_path, clock)
    decision = 5  # a decision event in logdata (launch, shown, decision, ...)
    damage(engine, decision, how)
    response = auditor.get("/console/events", query_string={"page": 2})  # oldest first here
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Chain broken." in html and f"BROKEN at #{decision}" in html
    assert "cannot be read" in html
    assert '<tr class="broken">' in html and "broken: its" in html

    response = auditor.get(f"/console/events/{decision}")
    assert response.status_code == 200
    detail = response.get_data(as_text=True)
    assert "This event is broken:" in detail and DAMAGE[how][2].replace("'", "&#39;") in detail
    if how == "data":
        assert "{not json" in detail  # the stored text, as it is, for the auditor

    for query in ({"type": "decision"}, {"outcome": "accepted"}, {"user": logdata.DR_A}):
        assert auditor.get("/console/events", query_string=query).status_code == 200, query

    response = auditor.get("/console/dashboard")
    assert response.status_code == 200
    assert "1 log event could not be read" in response.get_data(as_text=True)

    for fmt in ("csv", "ndjson"):
        response = auditor.get("/console/export", query_string={"format": fmt})
        assert response.status_code == 200
        assert response.headers["X-Handoff-Export-Broken"] == str(decision)
    csv_text = auditor.get("/console/export", query_string={"format": "csv"}).get_data(as_text=True)
    assert decision not in [r.seq for r in csv_records(io.StringIO(csv_text))]
    assert auditor.get(f"/console/events/{decision + 1}").status_code == 200


def test_console_pages_survive_a_damaged_checkpoint(tmp_path, clock):
    app, engine, auditor = console_app(tmp_path, clock)
    with app.app_context():
        referral_log_checkpoint(app)
    with engine.begin() as connection:
        connection.execute(text("UPDATE log_checkpoint SET at = 'soon'"))
    for url in ("/console/events", "/console/events/3", "/console/dashboard"):
        response = auditor.get(url)
        assert response.status_code == 200, url
    assert "cannot be read: its time (&#39;soon&#39;)" in auditor.get("/console/events").get_data(
        as_text=True
    )


def referral_log_checkpoint(app) -> None:
    from smartapp.audit import log as referral_log

    with current_services().db.session() as session:
        referral_log.checkpoint(session)
