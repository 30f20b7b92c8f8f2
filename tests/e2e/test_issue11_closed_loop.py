"""Issue 11's first acceptance test, in Chromium on the sandbox: the loop closed after the
physician's launch is over.

The physician launches Handoff from P01's chart (a launch token that lives one minute) and
signs; the launch ends (the token expires, its refresh is refused); a coach signs in at the
identity provider and, on the worklist, accepts, records contact (reached, with a note) and the
patient's consent to share with a partner's program (the consent form); the partner's own
system (its ES384 client assertion, its own key) gets a token from Handoff's partner token
endpoint, fetches its Task with its ServiceRequest and Patient, reports the first appointment
attended and then completes the Task (If-Match each time). The outbox writes each change to the
EHR with Handoff's backend services token. The EHR then holds the Task `completed` (attended),
the ServiceRequest `completed` and a Provenance per change naming who acted; and in Chromium
the worklist, the supervisor view and the program manager's dashboard show the handoff.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, text

from tests import launch_flow
from tests.backend_stack import (
    BACKEND_CLIENT,
    LAUNCH_CLIENT,
    end_the_launch,
    sandbox_tokens,
    start_backend_stack,
)
from tests.conftest import ARTIFACTS
from tests.e2e.staff_browser import sign_in
from tests.e2e.test_accessibility import axe_violations, describe
from tests.e2e.test_walking_skeleton import launch_from_chart
from tests.partners.helpers import PartnerClient, new_key
from tests.stacks import Stack, referral_of

PATIENT = "P01-pt"
PHYSICIAN = "Avery Demo, MD"
COACH = "Jordan Rivera, CPRS"
PARTNER = "Bridge Health"
PARTNER_ORG = "Organization/example-bridge-health"
#: What the run measured (reported by the test's output; not timed assertions).
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    built, _kid = start_backend_stack(
        tmp_path_factory.mktemp("issue11-loop"),
        shared_dir,
        staff_sign_in=True,
        DASHBOARD_MIN_CELL=1,  # one handoff: shown, not suppressed
        WORKLIST_POLL_SECONDS=1,
    )
    yield built
    built.stop()


@pytest.fixture(scope="module")
def partner(stack) -> PartnerClient:
    client = PartnerClient(
        f"http://127.0.0.1:{stack.app_port}",
        "bridge-health",
        "bridge-health-system",
        PARTNER_ORG,
        [new_key("bridge-e2e-1")],
        programs=["bridge-clinic"],
    )
    client.write_file(stack.launch_dir / "partners")  # read on the next request
    return client


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"issue11-{name}.png"), full_page=True)


def launch_lifetimes(stack: Stack) -> list[int]:
    """expires_in of every token the sandbox issued to Handoff's launch client."""
    engine = create_engine(f"sqlite:///{stack.launch_dir.parent / 'sandbox.sqlite'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT expires_in FROM oauth_token WHERE client_id = :c"),
                {"c": LAUNCH_CLIENT},
            )
            return [int(n) for (n,) in rows]
    finally:
        engine.dispose()


def physician_signs(browser, stack: Stack) -> str:
    """P01 launched from the chart in Chromium, the coach consult, MOUD and naloxone accepted,
    signed (the program is the coach's to choose with the patient); the referral's id."""
    launch_flow.Controls(stack.ehr_url).faults(access_token_lifetime=60)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    frame = launch_from_chart(page, stack.ehr, PATIENT)
    for kind in ("moud-buprenorphine", "naloxone-kit"):
        frame.locator(f'fieldset[data-kind="{kind}"] input[value="accept"]').check()
    frame.get_by_role("button", name="Sign").click()
    expect(frame.locator("#result")).to_contain_text("Written to the chart", timeout=15000)
    shot(page, "1-physician-signed")
    context.close()
    assert launch_lifetimes(stack) == [60]  # the launch token lived a minute
    return referral_of(stack.database_url, PATIENT).id


def coach_works_the_handoff(browser, stack: Stack, referral_id: str) -> None:
    """Jordan signs in, accepts, records contact and the patient's consent to share."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    sign_in(page, f"{stack.app.url}/worklist/", "demo-coach-1")
    expect(page.locator("h1.screen-title")).to_have_text("Warm handoffs", timeout=15000)
    row = page.locator(f'tr[data-referral="{referral_id}"]')
    expect(row.locator(".signer")).to_have_text(PHYSICIAN)
    # Arrival in the program's zone, named (the supervisor page's times are local too).
    expect(row.locator(".arrived")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d E[SD]T$"))
    row.get_by_role("button", name="Accept").click()
    row = page.locator(f'tr[data-referral="{referral_id}"]')
    expect(row.locator(".status")).to_have_text("accepted")
    row.get_by_label("Attempt", exact=True).select_option("reached")
    row.get_by_label("Contact note").fill("Met at bedside; agrees to the bridge clinic")
    row.get_by_role("button", name="Record contact").click()
    row = page.locator(f'tr[data-referral="{referral_id}"]')
    expect(row.locator(".status")).to_have_text("in-progress")
    shot(page, "2-worklist-contacted")

    row.get_by_role("link", name="Record consent to share").click()
    expect(page.locator("h1.screen-title")).to_have_text(
        "Consent to share with a community program", timeout=15000
    )
    page.get_by_label("Share with (the program's organisation)").select_option("bridge-health")
    page.get_by_label("Program", exact=True).select_option("bridge-clinic")
    page.get_by_label("Care coordination").check()
    page.get_by_role("button", name="Record the patient's consent").click()
    consent = page.locator('li[data-status="active"]')
    expect(consent).to_contain_text(PARTNER)
    expect(consent).to_contain_text(COACH)
    expect(consent.locator(".program")).to_have_text("Example Bridge Clinic")  # as chosen
    shot(page, "3-consent")
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    context.close()


def partner_reports(stack: Stack, partner: PartnerClient, referral_id: str) -> None:
    """The partner's system: token, Task search with its ServiceRequest and Patient, then
    attended and completed, each PUT based on the version it read."""
    token = partner.token()
    found = partner.get(
        f"Task?owner={PARTNER_ORG}&status=in-progress&_include=Task:focus&_include=Task:patient",
        token,
    )
    assert found.status_code == 200, found.text
    by_type: dict[str, list[dict]] = {}
    for entry in found.json()["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    (task,) = by_type["Task"]
    (service_request,) = by_type["ServiceRequest"]
    (patient,) = by_type["Patient"]
    assert task["id"] == referral_id and task["status"] == "in-progress"
    assert task["focus"]["reference"] == f"ServiceRequest/{service_request['id']}"
    assert set(patient) <= {"resourceType", "id", "meta", "name", "birthDate", "telecom"}

    attended = dict(task, businessStatus={"coding": [{"code": "appointment-attended"}]})
    answer = partner.put(f"Task/{referral_id}", attended, task["meta"]["versionId"], token)
    assert answer.status_code == 200, answer.text
    version = answer.headers["ETag"].removeprefix('W/"').removesuffix('"')

    reader = stack.reader(PATIENT)
    ehr_task = f"Task/{task_in_ehr(stack)}"
    controls = launch_flow.Controls(stack.ehr_url)
    controls.clear_requests()  # from here the log holds the completion's calls only
    completed = dict(
        answer.json(),
        status="completed",
        output=[{"type": {"text": "Outcome"}, "valueString": "Attended intake on day 1"}],
    )
    started = time.monotonic()
    answer = partner.put(f"Task/{referral_id}", completed, version, token)
    answered = time.monotonic()
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed"
    outbox_calls = controls.requests()
    while reader.get(ehr_task)["status"] != "completed":
        assert time.monotonic() - started < 30, "the EHR's Task never completed"
        time.sleep(0.1)
    FIGURES["put_answered_s"] = round(answered - started, 3)
    FIGURES["put_to_ehr_completed_s"] = round(time.monotonic() - started, 3)
    FIGURES["outbox_calls"] = [(c["method"], c["path"], c["status"]) for c in outbox_calls]
    # The launch ended two writes ago: neither its token nor its refresh is tried again, and
    # the backend token issued then is still good (no new one).
    assert [c["status"] for c in outbox_calls if c["status"] >= 400] == [], outbox_calls
    assert not [c for c in outbox_calls if c["path"].endswith("/auth/token")], outbox_calls


def task_in_ehr(stack: Stack) -> str:
    (task,) = stack.reader(PATIENT).search(f"Task?patient={PATIENT}")
    return task["id"]


def agents(provenance: dict) -> dict[str, dict]:
    """role code -> who, of one Provenance."""
    return {a["type"]["coding"][0]["code"]: a["who"] for a in provenance.get("agent", [])}


def check_the_ehr(stack: Stack, tokens_before_end: int) -> None:
    reader = stack.reader(PATIENT)
    (task,) = reader.search(f"Task?patient={PATIENT}")
    assert task["status"] == "completed"
    assert task["businessStatus"]["coding"][0]["code"] == "appointment-attended"
    assert [r["status"] for r in reader.search(f"ServiceRequest?patient={PATIENT}")] == [
        "completed"
    ]
    provenances = reader.search(f"Provenance?target=Task/{task['id']}")
    authors = [agents(p)["author"] for p in provenances]
    names = [who.get("display") for who in authors]
    assert names[0] == PHYSICIAN, names  # the first writes, at Sign
    assert COACH in names and PARTNER in names, names
    assert names.index(COACH) < names.index(PARTNER), names  # in the order they acted
    assert {"reference": PARTNER_ORG, "display": PARTNER} in [
        {k: who.get(k) for k in ("reference", "display")} for who in authors
    ]
    for p in provenances:  # the first writes and each update: Handoff as the assembler Device
        assert agents(p)["assembler"] == {"type": "Device", "display": "Handoff"}
    FIGURES["provenance_authors"] = names
    # Every token the EHR issued after the launch ended went to Handoff's backend client.
    later = sandbox_tokens(stack)[tokens_before_end:]
    handoff_later = [client for client, _s, _t in later if client.startswith("handoff-test")]
    assert handoff_later == [BACKEND_CLIENT], handoff_later  # one, shared by every write


def pages_show_it(browser, stack: Stack, referral_id: str) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    sign_in(page, f"{stack.app.url}/worklist/?closed=1", "demo-coach-1")
    row = page.locator(f'tr[data-referral="{referral_id}"]')
    expect(row.locator(".status")).to_have_text("completed", timeout=15000)
    expect(row.locator(".step")).to_have_text("First appointment attended")
    expect(row.locator(".shared")).to_contain_text(PARTNER)
    shot(page, "4-worklist-completed")
    context.close()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{stack.app.url}/supervisor/", "demo-supervisor")
    expect(page.locator("h1.screen-title")).to_have_text("Coach program", timeout=15000)
    shot(page, "5-supervisor")
    history = page.locator("#history tr", has_text=COACH)
    expect(history).to_have_count(1)
    expect(history.locator("[data-peak]")).to_have_text("1")
    context.close()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{stack.app.url}/console/dashboard", "demo-program-manager")
    outcomes = page.locator("section[aria-labelledby=outcomes-h]")
    expect(outcomes).to_contain_text("1 of 1: 1 confirmed by partner, 0 by coach", timeout=15000)
    expect(outcomes.locator(".tile", has_text="First appointment attended")).to_contain_text(
        "1 of 1 handoffs"
    )
    shot(page, "6-dashboard")
    outcomes.screenshot(path=str(ARTIFACTS / "issue11-6-dashboard-outcomes.png"))
    context.close()


def test_the_loop_closes_after_the_launch(browser, stack, partner):
    referral_id = physician_signs(browser, stack)
    tokens_before_end = len(sandbox_tokens(stack))
    end_the_launch(stack)
    coach_works_the_handoff(browser, stack, referral_id)
    partner_reports(stack, partner, referral_id)
    check_the_ehr(stack, tokens_before_end)
    pages_show_it(browser, stack, referral_id)
    print("issue 11 loop figures:", FIGURES)
