"""Who sees what: auditors read events, program managers only aggregates, coaches neither; no
staff session means sign-in (a physician's SMART launch session is not a staff session); an
auditor can change nothing anywhere."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from smartapp.audit.models import LogEvent
from smartapp.services import current_services
from tests.console import logdata
from tests.console.conftest import make_app
from tests.staff_login import STAFF_KEY, staff_session_token

EVENT_PAGES = (
    "/console/events",
    "/console/events/5",
    "/console/export?format=ndjson",
    "/console/export?format=csv",
)
ALL_PAGES = ("/console/", *EVENT_PAGES, "/console/dashboard")
IDENTITY = (
    *logdata.PATIENT_IDS,
    *logdata.ENCOUNTER_IDS,
    *logdata.NAMES,
    "MRN-77",
    "has a kit at home",
    "already with Bridge",
    "met in bay 4",
)


def event_count(app) -> int:
    with app.app_context(), current_services().db.session() as session:
        return session.scalar(select(func.count()).select_from(LogEvent))


def assert_no_identity(html: str) -> None:
    for secret in IDENTITY:
        assert secret not in html, secret
    assert not re.search(r"pat-\d\d-", html) and not re.search(r"enc-\d\d", html)


def test_auditor_lands_on_the_log_and_sees_events(auditor):
    assert auditor.get("/staff/").location.endswith("/console/")
    assert auditor.get("/console/").location.endswith("/console/events")
    html = auditor.get("/console/events").get_data(as_text=True)
    assert "pat-05-b6c0" in html and "enc-05-e913" in html
    for url in EVENT_PAGES + ("/console/dashboard",):
        assert auditor.get(url).status_code == 200, url


def test_program_manager_gets_the_dashboard_only(app, manager):
    assert manager.get("/staff/").location.endswith("/console/")
    assert manager.get("/console/").location.endswith("/console/dashboard")
    before = event_count(app)
    for url in EVENT_PAGES:
        response = manager.get(url)
        assert response.status_code == 403, url
        assert_no_identity(response.get_data(as_text=True))
    assert event_count(app) == before  # refused: nothing read, nothing exported, nothing logged
    response = manager.get("/console/dashboard")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert_no_identity(html)
    assert 'href="/console/events"' not in html  # no link to what they may not open
    # The figures are there (headline: 13 visits, 19 of 26 decided accepted, 6 of 10 linked).
    assert re.search(r"ED visits with suggestions</dt><dd>13</dd>", html)
    assert "19 of 26 decided" in html and "73%" in html
    assert "6 of 10 coach referrals" in html and "60%" in html
    assert "1 h 15 min" in html and "2 h 45 min" in html  # medians: referral, contact
    assert "&lt;5" in html  # small cells suppressed at the default threshold


def test_dashboard_read_is_logged_without_a_patient(app, manager):
    manager.get("/console/dashboard", query_string={"from": "2024-05-06", "to": "2024-05-12"})
    with app.app_context(), current_services().db.session() as session:
        last = session.scalars(select(LogEvent).order_by(LogEvent.seq.desc()).limit(1)).one()
        assert last.type == "audit-read" and last.user_ref == "urn:staff:pat"
        assert last.patient_id is None
        assert last.data["query"] == "program dashboard (2024-05-06-2024-05-12), aggregates only"


def test_dashboard_threshold_is_configurable(tmp_path, clock):
    app = make_app(tmp_path / "k3", DASHBOARD_MIN_CELL=3)
    with app.app_context():
        logdata.fill(current_services().db, clock)
    client = app.test_client()
    with client.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(
            app, {"sub": "p", "name": "P", "user_ref": "urn:staff:p", "roles": ["program-manager"]}
        )
    html = client.get("/console/dashboard").get_data(as_text=True)
    assert_no_identity(html)
    assert "&lt;3" in html and "&lt;5" not in html
    female = re.search(r'<th scope="row">Female</th>(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r">([^<>]+)</td>", female) == ["7", "14", "10", "4", "71%"]


@pytest.mark.parametrize("url", ALL_PAGES)
def test_coach_is_refused(client_as, url):
    assert client_as("coach").get(url).status_code == 403


@pytest.mark.parametrize("url", ALL_PAGES)
def test_no_staff_session_goes_to_sign_in(client_as, url):
    response = client_as(None).get(url)
    assert response.status_code == 302
    assert response.location.startswith("/staff/login?next=/console/")


@pytest.mark.parametrize("url", ALL_PAGES)
def test_a_physicians_launch_session_is_not_a_staff_session(app, url):
    client = app.test_client()
    with client.session_transaction() as session:
        session["browser_id"] = "physician-browser-after-a-smart-launch"
        session["csrf"] = "token"
    before = event_count(app)
    response = client.get(url)
    assert response.status_code == 302 and "/staff/login" in response.location
    assert_no_identity(response.get_data(as_text=True))
    assert event_count(app) == before


# Machine endpoints authenticate a client (a signed client assertion or a bearer token), never
# a staff session: a staff cookie gets the protocol's own refusal there (400 or 401).
MACHINE_PREFIXES = ("/partner/auth/", "/partner/fhir/", "/cds-services")


def test_an_auditor_can_change_nothing(app, auditor):
    """Every POST endpoint of the app but sign-out refuses an auditor, even with a valid CSRF
    token (403; a machine endpoint with the protocol's refusal); the console itself takes no
    POST at all."""
    with auditor.session_transaction() as session:
        session["csrf"] = "auditor-token"
    decision = next(
        e for e in _events(app) if e.type == "decision" and e.patient_id == "pat-05-b6c0"
    )
    before = event_count(app)
    posts = [r for r in app.url_map.iter_rules() if "POST" in r.methods]
    assert {r.endpoint for r in posts} >= {"screen.sign", "worklist.act"}
    for rule in posts:
        if rule.endpoint.endswith(".logout"):  # signing out (staff, partner page) is allowed
            continue
        url = (
            rule.rule.replace("<context_id>", "ctx-1")
            .replace("<referral_id>", decision.data["referral"])
            .replace("<action>", "accept")
            .replace("<int:day>", "1")
            .replace("<path:rest>", "Task/1")
        )
        response = auditor.post(url, data={"csrf_token": "auditor-token", "program": "X"})
        refused = (400, 401) if url.startswith(MACHINE_PREFIXES) else (403,)
        assert response.status_code in refused, (rule.rule, response.status_code)
    for url in ALL_PAGES:
        assert auditor.post(url.split("?")[0]).status_code == 405, url
    assert event_count(app) == before


def _events(app) -> list[LogEvent]:
    with app.app_context(), current_services().db.session() as session:
        rows = list(session.scalars(select(LogEvent).order_by(LogEvent.seq)))
        session.expunge_all()
    return rows


def test_console_forms_only_read(auditor, manager):
    """The only forms on console pages are GET searches and the sign-out (session only)."""
    for client, url in (
        (auditor, "/console/events"),
        (auditor, "/console/events/3"),
        (manager, "/console/dashboard"),
    ):
        html = client.get(url).get_data(as_text=True)
        for form in re.findall(r"<form[^>]*>", html):
            assert 'method="get"' in form or 'action="/staff/logout"' in form, form
