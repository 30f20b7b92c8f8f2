"""Issue 11 item 8: the dashboard's outcomes (linked, confirmed by the partner or the coach;
first appointment attended; engaged at 30 days; times from ED arrival), per partner and
program with small-cell suppression, from lifecycle events appended to a real SQLite log; the
page as a program manager sees it (HTTP, then headless Chromium), naming no coach and no one
who acted for a partner. The figures are worked out by hand in `outcomedata`'s comments."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from smartapp.audit import chain
from smartapp.catalog import load_catalog
from smartapp.config import Defaults
from smartapp.db import Database
from smartapp.partners.registry import Partner
from smartapp.services import current_services
from smartapp.staff import dashboard
from smartapp.staff.dashboard.service import directory, program_dashboard
from smartapp.web.serving import ServerHandle, serve_in_thread
from tests.conftest import ARTIFACTS
from tests.console import logdata
from tests.console.conftest import STAFF, make_app
from tests.console.test_screenshots import axe_serious, open_page, signed_in
from tests.dashboard import outcomedata as od
from tests.staff_login import STAFF_KEY, staff_session_token

COLUMNS = ("linked", "by_partner", "by_coach", "attended", "engaged")
RIVERSIDE = "Example Riverside Treatment Center"
PARTNER_FILE = f"""
id: bridge-health
name: {od.PARTNER_NAME}
organization:
  reference: {od.PARTNER_REF}
programs: [bridge-clinic, bridge-naltrexone, bridge-telehealth]
"""
SECRETS = (
    od.COACH_NAME,
    od.PARTNER_USER,
    logdata.COACH,
    logdata.DR_A,
    "Dr A",
    "met at the door",
    "doing ok",
    "voicemail",
    "Outcome Patient",
    "pat-o0",
    "enc-o0",
    "ref-",
    "555-0",
)


@pytest.fixture
def clock(monkeypatch) -> logdata.Clock:
    found = logdata.Clock()
    monkeypatch.setattr(chain, "utcnow", found)
    return found


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.migrate()
    yield database
    database.engine.dispose()


def names() -> dashboard.Directory:
    """The sample catalog's programs, and the one partner file above."""
    catalog = load_catalog(Defaults.CATALOG_DIR)
    partner = Partner.model_validate(
        {
            "id": "bridge-health",
            "name": od.PARTNER_NAME,
            "organization": {"reference": od.PARTNER_REF},
            "programs": ["bridge-clinic", "bridge-naltrexone", "bridge-telehealth"],
        }
    )
    return directory(catalog.programs(), [partner])


def outcomes_of(db: Database, min_cell: int) -> dict:
    """The outcome figures as the page reads them: from the database, through the service."""
    with db.session() as session:
        shown = program_dashboard(
            session, start=None, end=None, min_cell=min_cell, programs=(), names=names()
        )
    assert shown.unreadable == 0
    return shown.figures["outcomes"]


def rows(table: list[dict]) -> list[list[str]]:
    """A partner and program table as text: [partner, program or "", figures...]."""
    out = []
    for partner in table:
        out.append([partner["name"], ""] + [partner[c]["text"] for c in COLUMNS])
        for program in partner["programs"]:
            out.append([partner["name"], program["name"]] + [program[c]["text"] for c in COLUMNS])
    return out


def test_totals_say_who_confirmed_the_link(db, clock):
    od.fill(db, clock)
    totals = outcomes_of(db, 1)["totals"]
    # 7 coach referrals and visit 8, which only a partner and the consent followed.
    assert totals == {
        "handoffs": 8,
        "contacted": 7,  # all but 8 (6 only through a follow-up that reached the patient)
        "linked": 6,
        "by_partner": 4,  # 1, 3, 7, 8
        "by_coach": 2,  # 2 (the partner's repeat of the coach's step is not its own) and 4
        "attended": 3,  # 1, 3 (engaged implies it), 4
        "engaged": 3,  # 1 and 5 (day-30 follow-up), 3 (reported)
        "linked_rate": 6 / 8,
        "attended_rate": 3 / 8,
        "engaged_rate": 3 / 8,
    }


def test_times_from_arrival(db, clock):
    od.fill(db, clock)
    times = outcomes_of(db, 1)["times"]
    # First contact: 20 30 45 60 90 240 1500 minutes (6 at its reaching follow-up).
    first = times["first_contact"]
    assert (first["n"], first["median"], first["negative"]) == (7, 60, 0)
    assert first["p90"] == pytest.approx(240 + 0.4 * (1500 - 240))
    # Scheduled: 2 by the coach at 150 min, 1 as the partner reported it (1 day); 7 gave a
    # date only (not timed); 8's time before arrival is counted apart.
    scheduled = times["scheduled"]
    assert (scheduled["n"], scheduled["median"], scheduled["negative"]) == (2, 795, 1)
    # Attended: 4 at 2 days (the coach's report), 1 at 3 days (reported later with `at`).
    attended = times["attended"]
    assert (attended["n"], attended["median"]) == (2, 3600)
    assert attended["p90"] == pytest.approx(2880 + 0.9 * 1440)
    assert dashboard.format_minutes(attended["median"]) == "2 d 12 h"
    # At the default threshold only the first contact is summarised.
    times = outcomes_of(db, 5)["times"]
    assert times["first_contact"]["median"] == 60 and not times["first_contact"]["suppressed"]
    for name in ("scheduled", "attended"):
        assert times[name]["suppressed"] and times[name]["median"] is None
        assert times[name]["p90"] is None


def test_per_partner_and_program(db, clock):
    od.fill(db, clock)
    table = outcomes_of(db, 1)["partners"]
    bridge, riverside = "Example Bridge Clinic", "Example Riverside Opioid Treatment Program"
    assert rows(table) == [
        [od.PARTNER_NAME, "", "4", "3", "1", "2", "2"],
        [od.PARTNER_NAME, bridge, "3", "2", "1", "1", "1"],  # 1, 2 (coach's pick), 7 (consent)
        [od.PARTNER_NAME, "Example Bridge Tele-MOUD", "1", "1", "0", "1", "1"],
        # 4: the catalog organisation of the coach's program (no partner file for it).
        ["Example Riverside Treatment Center", "", "1", "0", "1", "1", "0"],
        ["Example Riverside Treatment Center", riverside, "1", "0", "1", "1", "0"],
        # 8: a partner id Handoff has no data for.
        [dashboard.OTHER_PARTNER, "", "1", "1", "0", "0", "0"],
        [dashboard.OTHER_PARTNER, riverside, "1", "1", "0", "0", "0"],
        # 5: engaged without a link.
        [dashboard.NO_PARTNER, "", "0", "0", "0", "0", "1"],
        [dashboard.NO_PARTNER, "Program not named", "0", "0", "0", "0", "1"],
    ]
    assert table[0]["to_attended"]["median"] == 3 * od.DAY
    assert table[1]["to_attended"]["median"] == 2 * od.DAY


def test_without_partner_data_the_catalog_organisation_names_the_partner(db, clock):
    od.fill(db, clock)
    catalog = load_catalog(Defaults.CATALOG_DIR)
    with db.session() as session:
        figures = program_dashboard(
            session,
            start=None,
            end=None,
            min_cell=1,
            programs=(),
            names=directory(catalog.programs()),
        ).figures
    partners = [p["name"] for p in figures["outcomes"]["partners"]]
    # Updates naming the partner "bridge-health" cannot be named without its file: "Other".
    assert partners == [
        "Example Riverside Treatment Center",
        dashboard.OTHER_PARTNER,
        dashboard.NO_PARTNER,
    ]
    assert od.PARTNER_NAME not in json.dumps(figures)


# -- suppression ---------------------------------------------------------------------------------


def bigger() -> tuple[tuple[logdata.Visit, ...], tuple[od.Step, ...]]:
    """15 handoffs: 6 the partner confirmed at Bridge Clinic (all attended, 5 engaged at 30
    days), 2 the coach linked to Bridge Tele-MOUD, 7 the coach linked to Riverside's program."""
    visits, steps = [], []
    plan = [("bridge-clinic", "partner")] * 6 + [("bridge-telehealth", "coach")] * 2
    plan += [("riverside-methadone", "coach")] * 7
    for n, (program, who) in enumerate(plan, start=1):
        visits.append(od.visit(n, (("accept", 14, {}), ("contact", 30 + n, {}))))
        if who == "coach":
            data = {"task_status": "completed", "program": "typed", "program_id": program}
            steps.append(od.Step(n, 100, "coach-link", data, "coach"))
            continue
        status = {"program": program, "partner": "bridge-health", "task_status": "in-progress"}
        steps.append(
            od.Step(
                n,
                3000,
                "handoff-status",
                status | {"business_status": "appointment-attended"},
                "partner",
            )  # noqa: E501
        )
        if n <= 5:
            steps.append(
                od.Step(
                    n,
                    30 * od.DAY,
                    "handoff-status",
                    status | {"business_status": "engaged-30-days"},
                    "partner",
                )  # noqa: E501
            )
    return tuple(visits), tuple(steps)


def lone_hidden(table: list[dict], totals: dict) -> list[str]:
    """Every public sum with exactly one hidden term (its term could be worked out): within a
    row (linked = by partner + by coach), a partner and its programs, the partners' rows and
    all the program rows (each adding up to the headline total)."""
    found = []

    def check(name: str, cells: list[dict]) -> None:
        if sum(1 for c in cells if c["suppressed"]) == 1:
            found.append(name)

    programs = [p for partner in table for p in partner["programs"]]
    for row in table + programs:
        check(f"{row['name']} row", [row[c] for c in ("linked", "by_partner", "by_coach")])
    for column in COLUMNS:
        check(f"partners {column}", [p[column] for p in table])
        check(f"programs {column}", [p[column] for p in programs])
        for partner in table:
            check(
                f"{partner['name']} {column}",
                [partner[column]] + [p[column] for p in partner["programs"]],
            )  # noqa: E501
        shown = [p[column]["value"] for p in programs]
        if None not in shown:
            assert sum(shown) == totals[column]
    return found


def test_small_cells_are_suppressed_and_cannot_be_worked_out(db, clock):
    visits, steps = bigger()
    od.fill(db, clock, visits, steps)
    outcomes = outcomes_of(db, 5)
    table = outcomes["partners"]
    assert outcomes["totals"]["by_partner"] == 6 and outcomes["totals"]["by_coach"] == 9
    assert rows(table) == [
        # Tele-MOUD's 2 are "<5"; its partner's total 8 stays, so Bridge Clinic's linked is
        # hidden ("*"), and with it its parts; the partner's by-partner figure would give away
        # its by-coach "<5" through linked = by partner + by coach: hidden too.
        [od.PARTNER_NAME, "", "8", "*", "<5", "6", "5"],
        # Tele-MOUD's "none attended, none engaged" would say what both its patients did not
        # do: hidden; Bridge Clinic's 6 and 5 would then give those zeros away: hidden too.
        [od.PARTNER_NAME, "Example Bridge Clinic", "*", "*", "*", "*", "*"],
        [od.PARTNER_NAME, "Example Bridge Tele-MOUD", "<5", "*", "<5", "*", "*"],
        # Riverside's by-coach 7 would give away the partner's "<5" from the headline total (9);
        # its by-partner 0 would give away the partner's hidden 6 from the headline's 6.
        [RIVERSIDE, "", "7", "*", "*", "0", "0"],
        [RIVERSIDE, "Example Riverside Opioid Treatment Program", "7", "*", "*", "0", "0"],
    ]
    assert lone_hidden(table, outcomes["totals"]) == []
    # No suppressed figure carries its number out.
    for row in table + [p for partner in table for p in partner["programs"]]:
        for column in COLUMNS:
            assert (row[column]["value"] is None) == row[column]["suppressed"]
    # At a threshold of 2 nothing is small: every figure is shown.
    assert all("*" not in r and "<2" not in r for r in rows(outcomes_of(db, 2)["partners"]))


# -- unchanged for the logs from before issue 11 -------------------------------------------------


def test_a_log_without_lifecycle_events_keeps_its_figures():
    figures = dashboard.summarize(logdata.as_dicts(), programs=logdata.CATALOG_PROGRAMS)
    totals = figures["outcomes"]["totals"]
    # The coach's clicks are the only links: all by coach, every handoff a coach referral.
    assert (totals["handoffs"], totals["linked"], totals["by_coach"]) == (10, 6, 6)
    assert (totals["by_partner"], totals["attended"], totals["engaged"]) == (0, 0, 0)
    assert figures["totals"]["linked"] == 6 and figures["totals"]["coach_referrals"] == 10
    # First contact is the coach's contact here: the same 8 spans as the existing figure.
    first = figures["outcomes"]["times"]["first_contact"]
    assert (first["n"], first["median"]) == (8, figures["times"]["contact"]["median"]) == (8, 165)


# -- the page ------------------------------------------------------------------------------------


def manager_page(app: Flask) -> str:
    client = app.test_client()
    with client.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(app, STAFF["program-manager"])
    response = client.get("/console/dashboard")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def outcome_app(folder: Path, clock: logdata.Clock, **config) -> Flask:
    partners = folder / "partners"
    partners.mkdir(parents=True)
    (partners / "bridge-health.yaml").write_text(PARTNER_FILE)
    app = make_app(folder / "instance", PARTNERS_DIR=str(partners), **config)
    with app.app_context():
        od.fill(current_services().db, clock)
    return app


def test_the_page_shows_the_outcomes_and_names_no_coach(tmp_path, clock):
    html = manager_page(outcome_app(tmp_path, clock, DASHBOARD_MIN_CELL=1))
    assert "Outcomes after the ED" in html
    assert "6 of 8: 4 confirmed by partner, 2 by coach" in html
    assert "First appointment attended</dt><dd>38%</dd>" in html
    assert "Engaged at 30 days</dt><dd>38%</dd>" in html
    assert "Arrival → first contact</dt><dd>1 h</dd>" in html
    first_row = re.search(r"To first contact.*?</tr>", html, re.S).group(0)
    assert re.findall(r">([^<>]+)</td>", first_row) == ["1 h", "12 h 24 min", "7"]
    assert f'<th scope="rowgroup" rowspan="3">{od.PARTNER_NAME}</th>' in html
    assert '<th scope="row">Example Bridge Clinic</th>' in html
    row = re.search(r'<th scope="row">Example Bridge Clinic</th>(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r">([^<>]+)</td>", row) == ["3", "2", "1", "1", "1", "3 d"]
    assert dashboard.OTHER_PARTNER in html and dashboard.NO_PARTNER in html
    for secret in SECRETS:
        assert secret not in html, secret


def test_the_page_suppresses_small_cells_by_default(tmp_path, clock):
    html = manager_page(outcome_app(tmp_path, clock))
    table = re.search(r'<table class="data outcomes">.*?</table>', html, re.S).group(0)
    cells = re.findall(r'<td class="num( suppressed)?">([^<>]+)</td>', table)
    # Every patient count under 5: no figure but 0 shows, and no median ("—").
    assert cells and all(hidden or text in ("0", "—") for hidden, text in cells)
    assert {text for hidden, text in cells if hidden} == {"&lt;5", "*"}
    # The headline totals stay (the figures every table adds up to).
    assert "6 of 8: 4 confirmed by partner, 2 by coach" in html
    for secret in SECRETS:
        assert secret not in html, secret


@pytest.fixture
def outcome_server(tmp_path: Path, clock: logdata.Clock) -> Iterator[ServerHandle]:
    """The app on a local port with the outcome log (small cells: under 3 patients)."""
    app = outcome_app(tmp_path, clock, DASHBOARD_MIN_CELL=3)
    handle = serve_in_thread(app, "127.0.0.1", 0)
    handle.app = app
    yield handle
    handle.stop()


def test_the_outcomes_in_chromium(browser, outcome_server):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    context = signed_in(browser, outcome_server, outcome_server.app, "program-manager")
    page = open_page(context, f"{outcome_server.url}/console/dashboard", problems)
    section = page.locator("section[aria-labelledby=outcomes-h]")
    assert "4 confirmed by partner, 2 by coach" in section.inner_text()
    assert page.locator("svg#outcomes, svg[aria-labelledby^=outcomes-t]").count() == 1
    assert (
        page.get_by_role("table", name=re.compile("Outcomes by partner and program")).count() == 1
    )
    assert axe_serious(page) == []
    section.screenshot(path=str(ARTIFACTS / "dashboard-outcomes.png"))
    text = page.locator("body").inner_text()
    for secret in SECRETS:
        assert secret not in text, secret
    context.close()
    assert problems == []
