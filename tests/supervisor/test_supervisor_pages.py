"""The supervisor view over real HTTP, staff signed in through the sandbox's OpenID Connect
provider: a supervisor sees the team queue with coach names and places a handoff (the lifecycle
records the supervisor as who acted); coaches, program managers and auditors are refused the
page and the action (403, nothing changes), and the program dashboard names no coach."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.staff import caseload
from tests import launch_flow
from tests.launch_flow import Controls
from tests.supervisor.staff_http import csrf_of, sign_in

COACHES = ("Jordan Rivera", "Sam Lee")


def services(handoff):
    return handoff.app.extensions["handoff"]


def queued_ids(handoff) -> list[str]:
    return [w.referral_id for w in caseload.team_queue(services(handoff).db)]


@pytest.fixture(scope="module")
def queued(sandbox, handoff) -> str:
    """A handoff signed by the physician (P21), waiting in the team queue."""
    Controls(sandbox.url).clear()
    launch = launch_flow.full(handoff.url, sandbox.url, "P21-pt")
    assert 'class="coach-expectation"' in launch.final.text
    launch_flow.sign_all(launch, handoff.url)
    with services(handoff).db.session() as session:
        from smartapp.db import Referral

        referral = session.scalars(select(Referral).where(Referral.patient_id == "P21-pt")).one()
    assert referral.id in queued_ids(handoff)
    return referral.id


@pytest.mark.parametrize(
    ("user", "own_page"),
    [
        ("demo-coach-1", "/worklist/"),
        ("demo-program-manager", "/console/dashboard"),
        ("demo-auditor", "/console/events"),
    ],
)
def test_others_are_refused_the_supervisor_view_and_its_action(
    sandbox, handoff, queued, user, own_page
):
    browser, _ = sign_in(handoff.url, user)
    token = csrf_of(browser.get(f"{handoff.url}{own_page}", timeout=10).text)
    page = browser.get(f"{handoff.url}/supervisor/", allow_redirects=False, timeout=10)
    assert page.status_code == 403
    assert not any(name in page.text for name in COACHES) and "Test P21" not in page.text
    coach_ref = f"{sandbox.url}/fhir/Practitioner/demo-coach-1"
    moved = browser.post(
        f"{handoff.url}/supervisor/reassign",
        data={"csrf_token": token, "referral": queued, "to": coach_ref},
        allow_redirects=False,
        timeout=10,
    )
    assert moved.status_code == 403
    assert queued in queued_ids(handoff)  # nothing changed


def test_no_staff_session_means_sign_in(sandbox, handoff):
    physician = launch_flow.full(handoff.url, sandbox.url, "P23-pt").browser  # a SMART session
    for browser in (physician, None):
        client = browser or __import__("requests").Session()
        answer = client.get(f"{handoff.url}/supervisor/", allow_redirects=False, timeout=10)
        assert answer.status_code == 302 and "/staff/login" in answer.headers["Location"]


def test_a_supervisor_sees_coach_names_and_places_a_queued_handoff(sandbox, handoff, queued):
    jordan, _ = sign_in(handoff.url, "demo-coach-1")  # on shift now
    assert jordan.get(f"{handoff.url}/worklist/", timeout=10).status_code == 200
    boss, landed = sign_in(handoff.url, "demo-supervisor")
    assert landed.headers["Location"].endswith("/staff/")
    home = boss.get(f"{handoff.url}/staff/", allow_redirects=False, timeout=10)
    assert home.headers["Location"].endswith("/supervisor/")
    page = boss.get(f"{handoff.url}/supervisor/", timeout=10).text
    queue = page[page.index('id="queue"') : page.index('id="reassign"')]
    assert f'data-referral="{queued}"' in queue and "Test P21" in queue
    jordan_ref = f"{sandbox.url}/fhir/Practitioner/demo-coach-1"
    assert f'<option value="{jordan_ref}">Jordan Rivera, CPRS</option>' in queue, queue[-1500:]
    assert re.search(r"Handoffs signed</dt><dd data-figure=\"signed\">\d+</dd>", page)

    moved = boss.post(
        f"{handoff.url}/supervisor/reassign",
        data={"csrf_token": csrf_of(page), "referral": queued, "to": jordan_ref, "note": "busy"},
        timeout=10,
    )
    assert "Handoff reassigned to Jordan Rivera, CPRS." in moved.text
    assert queued not in queued_ids(handoff)
    held = moved.text[moved.text.index('id="reassign"') :]
    assert "Test P21 · Jordan Rivera, CPRS · accepted" in held

    # The log names the supervisor as who acted, and the coach it went to.
    with services(handoff).db.session() as session:
        event = session.scalars(
            select(LogEvent).where(LogEvent.type == "handoff-reassign").order_by(LogEvent.seq)
        ).all()[-1]
    assert event.data["referral"] == queued and event.data["actor_kind"] == "supervisor"
    assert event.data["user_name"] == "Casey Morgan, LCSW"
    assert (event.data["to"], event.data["to_name"]) == (jordan_ref, "Jordan Rivera, CPRS")
    # Jordan's worklist has it as his own.
    mine = jordan.get(f"{handoff.url}/worklist/", timeout=10).text
    assert re.search(rf'data-referral="{queued}"', mine)


def test_the_program_dashboard_names_no_coach(handoff, queued):
    manager, _ = sign_in(handoff.url, "demo-program-manager")
    dashboard = manager.get(f"{handoff.url}/console/dashboard", timeout=10)
    assert dashboard.status_code == 200
    assert not any(name in dashboard.text for name in (*COACHES, "Casey Morgan"))
    assert "/supervisor/" not in dashboard.text
