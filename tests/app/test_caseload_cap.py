"""The coach cap, end to end over real HTTP (issue 11 acceptance): with the cap set to 1, a
coach who accepts one handoff is full; the physician's screen for the next patient says,
before Sign, that the handoff will wait in the team queue and gives the warm line; signed, it
waits unowned in the team queue (worklist and supervisor view), and neither the coach nor a
supervisor can put it on the full coach."""

from __future__ import annotations

import re

import pytest

from smartapp.db import Database
from smartapp.staff import caseload
from smartapp.staff.caseload import CaseloadFull
from tests import launch_flow
from tests.stacks import referral_of, start_stack
from tests.supervisor.staff_http import CSRF, as_staff

JORDAN = {
    "sub": "demo-coach-1",
    "name": "Jordan Rivera, CPRS",
    "user_ref": "urn:staff:demo-coach-1",
    "roles": ["coach"],
}
SUPERVISOR = {
    "sub": "demo-supervisor",
    "name": "Casey Morgan, LCSW",
    "user_ref": "urn:staff:demo-supervisor",
    "roles": ["supervisor"],
}
QUEUED = (
    "All coaches on shift are at their caseload: the handoff will wait in the team queue; "
    "warm line (555) 555-0142."
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    running = start_stack(tmp_path_factory.mktemp("cap"), shared_dir, COACH_CASELOAD_CAP=1)
    yield running
    running.stop()


def expectation_of(page: str) -> tuple[str, str]:
    """The one line the screen shows about the coach team, and its kind."""
    found = re.search(
        r'<p class="coach-expectation" data-expectation="(\w+)"[^>]*>([^<]+)</p>', page
    )
    assert found, "no coach expectation on the screen"
    return found[1], found[2]


def referral_row(page: str, patient_id: str) -> str:
    found = re.search(rf'data-referral="([^"]+)"[^>]*data-patient-id="{patient_id}"', page)
    assert found, f"{patient_id} not on the worklist"
    return found[1]


def flashed(page: str) -> list[str]:
    return re.findall(r'<p class="flash flash-\w+" role="status">([^<]+)</p>', page)


def test_a_coach_at_the_cap_sends_the_next_handoff_to_the_team_queue(stack):
    app, url = stack.app.app, f"http://127.0.0.1:{stack.app_port}"
    jordan = as_staff(app, url, JORDAN)  # signed in: on shift
    assert jordan.get(f"{url}/worklist/", timeout=10).status_code == 200

    # A coach on shift under the cap: the physician is told one is available.
    first = launch_flow.full(url, stack.ehr_url, "P04-pt")
    assert expectation_of(first.final.text) == ("available", "A coach is available now.")
    launch_flow.sign_all(first, url)
    page = jordan.get(f"{url}/worklist/", timeout=10).text
    first_id = referral_row(page, "P04-pt")
    accepted = jordan.post(
        f"{url}/worklist/{first_id}/accept", data={"csrf_token": CSRF}, timeout=10
    )
    assert accepted.status_code == 200 and "Handoff updated: accept." in flashed(accepted.text)

    # Jordan holds 1 of 1: the next physician is told before Sign, with the warm line.
    second = launch_flow.full(url, stack.ehr_url, "P07-pt")
    screen = second.final.text
    assert expectation_of(screen) == ("queued", QUEUED)
    assert screen.index('class="coach-expectation"') < screen.index('class="sign"')
    assert 'data-kind="prc-consult"' in screen[: screen.index('class="coach-expectation"')]
    launch_flow.sign_all(second, url)
    told = referral_of(stack.database_url, "P07-pt").decision["shown"]["coach_expectation"]
    assert (told["kind"], told["reason"], told["warm_line"]["phone"]) == (
        "queued",
        "at-cap",
        "(555) 555-0142",
    )

    # Signed, it waits unowned in the team queue; Jordan cannot take it over the cap.
    db = Database(stack.database_url)
    second_id = referral_row(jordan.get(f"{url}/worklist/", timeout=10).text, "P07-pt")
    assert [w.referral_id for w in caseload.team_queue(db)] == [second_id]
    with pytest.raises(CaseloadFull, match=r"You have 1 open handoff, the caseload cap \(1\)"):
        caseload.check_accept(db, JORDAN, app.config)
    refused = jordan.post(
        f"{url}/worklist/{second_id}/accept", data={"csrf_token": CSRF}, timeout=10
    )
    assert any("the caseload cap (1)" in m for m in flashed(refused.text)), flashed(refused.text)
    assert [w.referral_id for w in caseload.team_queue(db)] == [second_id]

    # The supervisor sees it waiting with no coach, and cannot put it on the full coach.
    boss = as_staff(app, url, SUPERVISOR)
    view = boss.get(f"{url}/supervisor/", timeout=10).text
    queue = view[view.index('id="queue"') : view.index('id="reassign"')]
    assert f'data-referral="{second_id}"' in queue and "Test P07" in queue
    assert re.search(r'data-coach="urn:staff:demo-coach-1">.*?data-open="1">1 of 1', view, re.S)
    moved = boss.post(
        f"{url}/supervisor/reassign",
        data={"csrf_token": CSRF, "referral": second_id, "to": JORDAN["user_ref"]},
        timeout=10,
    )
    assert "Jordan Rivera, CPRS has 1 open handoff, the caseload cap (1)" in moved.text
    assert [w.referral_id for w in caseload.team_queue(db)] == [second_id]
