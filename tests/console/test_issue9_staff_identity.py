"""Issue 9, item 12: one form for staff identities in the log (`Practitioner/x` whether the
source said `Practitioner/x` or `http://.../fhir/Practitioner/x`), the display name stored
beside it, and a console search by name or id (any part, letter case aside)."""

from __future__ import annotations

import re

from sqlalchemy import select

from smartapp.audit import log as referral_log
from smartapp.audit.models import LogEvent
from smartapp.services import current_services
from tests import launch_flow
from tests.console import logdata
from tests.console.test_console import found

EHR = "https://ehr.example.org/fhir"


def test_user_reference_has_one_form():
    assert referral_log.user_reference(f"{EHR}/Practitioner/dr-1", EHR) == (
        "Practitioner/dr-1",
        None,
    )
    assert referral_log.user_reference("Practitioner/dr-1", EHR) == ("Practitioner/dr-1", None)
    # A staff sign-in names no EHR: the base is given back, to keep beside the reference.
    assert referral_log.user_reference(f"{EHR}/Practitioner/coach-1/") == (
        "Practitioner/coach-1",
        EHR,
    )
    assert referral_log.user_reference("urn:staff:ann") == ("urn:staff:ann", None)
    assert referral_log.user_reference("  ") == (None, None)


def test_append_stores_the_one_form_and_the_name(app):
    with app.app_context(), current_services().db.session() as session:
        referral_log.append(
            session,
            "staff-sign-in",
            user_ref=f"{EHR}/Practitioner/coach-1",
            user_name="Cal Coach",
            data={"roles": ["coach"]},
        )
        referral_log.append(
            session,
            "launch",
            user_ref=f"{EHR}/Practitioner/dr-a",
            iss=EHR,
            user_name="Avery Demo, MD",
            data={"registration": "epic"},
        )
    with app.app_context(), current_services().db.session() as session:
        staff, launch = list(
            session.scalars(select(LogEvent).order_by(LogEvent.seq.desc()).limit(2))
        )[::-1]
        names = referral_log.user_names(session)
    assert (staff.user_ref, staff.data) == (
        "Practitioner/coach-1",
        {"roles": ["coach"], "user_base": EHR, "user_name": "Cal Coach"},
    )
    assert (launch.user_ref, launch.data) == (
        "Practitioner/dr-a",
        {"registration": "epic", "user_name": "Avery Demo, MD"},
    )
    assert names["Practitioner/coach-1"] == "Cal Coach"
    assert names[logdata.DR_A] == "Avery Demo, MD"


def name_users(app) -> None:
    """The sign-ins and a launch that name the fixture's users, as the app now logs them."""
    with app.app_context(), current_services().db.session() as session:
        referral_log.append(
            session,
            "staff-sign-in",
            user_ref=f"{EHR}/{logdata.COACH}",
            user_name="Cal Coach",
            data={"roles": ["coach"]},
        )
        referral_log.append(
            session,
            "launch",
            user_ref=logdata.DR_B,
            iss=EHR,
            user_name="Blake Osei, MD",
            data={"registration": "epic"},
        )


def test_search_by_name_or_id_any_part_any_case(app, auditor):
    name_users(app)
    coach_events = found(
        auditor.get("/console/events", query_string={"user": logdata.COACH}).get_data(as_text=True)
    )
    assert coach_events == 27  # 26 coach events of the fixture and the sign-in, one form
    for query in ("cal coach", "CAL", "practitioner/COACH-1", "coach-1"):
        html = auditor.get("/console/events", query_string={"user": query}).get_data(as_text=True)
        assert found(html) == coach_events, query
    decisions = {"user": "osei", "type": "decision"}
    assert found(auditor.get("/console/events", query_string=decisions).get_data(as_text=True)) == 5
    assert "No event matches." in auditor.get(
        "/console/events", query_string={"user": "nobody-at-all"}
    ).get_data(as_text=True)


def test_names_are_shown_beside_the_ids(app, auditor):
    name_users(app)
    html = auditor.get("/console/events", query_string={"user": "osei"}).get_data(as_text=True)
    assert (
        '<td class="ref">Blake Osei, MD<br><span class="muted">Practitioner/dr-b</span></td>'
        in html
    )
    assert '<option value="Blake Osei, MD">Practitioner/dr-b</option>' in html
    seq = int(re.findall(r'aria-label="Event (\d+) details"', html)[0])
    detail = auditor.get(f"/console/events/{seq}").get_data(as_text=True)
    assert "Blake Osei, MD (Practitioner/dr-b)" in detail


def test_a_name_search_exports_the_same_events(app, auditor):
    name_users(app)
    page = found(
        auditor.get("/console/events", query_string={"user": "cal coach"}).get_data(as_text=True)
    )
    response = auditor.get("/console/export", query_string={"format": "csv", "user": "cal coach"})
    assert int(response.headers["X-Handoff-Export-Events"]) == page == 27


# -- end to end: a SMART launch and a staff sign-in through the sandbox -----------------------


def test_launch_and_staff_sign_in_log_one_form_with_names(sandbox, handoff):
    from tests.app.test_issue9_launch_security import staff_sign_in

    launch = launch_flow.full(handoff.url, sandbox.url, "P01-pt")
    assert launch.final.status_code == 200
    browser, answer = staff_sign_in(handoff.url, "demo-auditor")
    assert answer.status_code in (302, 303), answer.text[:300]
    page = browser.get(
        f"{handoff.url}/console/events", params={"user": "MORGAN ell"}, timeout=15
    ).text
    assert found(page) >= 1
    assert (
        '<td class="ref">Morgan Ellis<br><span class="muted">Practitioner/demo-auditor</span></td>'
    ) in page
    assert re.search(r'<td class="ref">[^<]*http', page) is None  # no absolute user anywhere
    physician = browser.get(
        f"{handoff.url}/console/events", params={"user": "avery demo", "type": "launch"}, timeout=15
    ).text
    assert found(physician) >= 1
    assert (
        '<td class="ref">Avery Demo, MD<br><span class="muted">'
        "Practitioner/demo-ed-physician</span></td>"
    ) in physician
    same = browser.get(
        f"{handoff.url}/console/events",
        params={"user": "practitioner/demo-ED", "type": "launch"},
        timeout=15,
    )
    assert found(same.text) == found(physician)
