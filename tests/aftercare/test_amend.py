"""Amend after Sign (issue 13 item 6), over real HTTP: the sandbox EHR, a SMART launch, the
screen's Sign, then the amend route as the launching browser would post it.

- revoke: the Task cancelled, the ServiceRequest revoked, a Provenance naming the physician;
  logged `decision-amended` (who, what, why) beside the original decision, never instead;
- decline -> accept: one new referral with identifiers of its own, even when the form is
  posted twice at once; a second revoke and a third placement never reuse an identifier;
- another browser is refused; a stale form changes nothing.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import Database, LaunchContext, Referral
from smartapp.writeback import outbox
from tests import launch_flow
from tests.stacks import start_stack

PHYSICIAN_REF = "Practitioner/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("amend"), shared_dir)
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(outbox, "BACKOFF_BASE_SECONDS", 0.2)


# -- helpers -------------------------------------------------------------------------------


def context_of(launch) -> str:
    return launch.final.url.rsplit("/", 1)[1]


def shown_of(stack, context_id: str) -> dict:
    with Database(stack.database_url).session() as session:
        return session.get(LaunchContext, context_id).shown


def sign(stack, launch, decline_coach: bool = False) -> requests.Response:
    """Sign the launch's screen: every suggestion accepted, the coach consult declined when
    asked (with the first decline reason the pack offers that needs no words)."""
    if not decline_coach:
        return launch_flow.sign_all(launch, stack.app.url)
    context_id = context_of(launch)
    shown = shown_of(stack, context_id)
    token = re.search(r'name="csrf_token" value="([^"]+)"', launch.final.text).group(1)
    form = {"csrf_token": token, "consult-mode": "in-person"}
    for suggestion in shown["suggestions"]:
        kind = suggestion["kind"]
        if kind == "prc-consult":
            reason = next(r for r in suggestion["decline_reasons"] if not r["free_text"])
            form |= {f"decision-{kind}": "decline", f"reason-{kind}": reason["code"]}
        else:
            form[f"decision-{kind}"] = "accept"
    return launch.browser.post(f"{stack.app.url}/c/{context_id}/sign", data=form, timeout=30)


def amend_form(browser: requests.Session, url: str) -> dict:
    page = browser.get(url, timeout=15)
    assert page.status_code == 200, page.text[:300]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    assert {"csrf_token", "based_on", "action"} <= set(fields)
    return fields


def referrals(stack, patient: str) -> list[Referral]:
    with Database(stack.database_url).session() as session:
        query = select(Referral).where(Referral.patient_id == patient)
        return list(session.scalars(query.order_by(Referral.created_at)))


def events(stack, type_: str, referral_id: str) -> list[LogEvent]:
    with Database(stack.database_url).session() as session:
        rows = session.scalars(select(LogEvent).where(LogEvent.type == type_)).all()
    return [e for e in rows if (e.data or {}).get("referral") == referral_id]


def written_ids(row: Referral) -> dict[str, str]:
    return {
        op["type"]: op["id"]
        for op in row.plan["operations"]
        if op.get("method", "POST") == "POST" and not op.get("about") and op.get("id")
    }


def identifiers(row: Referral) -> set[str]:
    return {
        ident["value"]
        for op in row.plan["operations"]
        if not op.get("about")
        for ident in (op.get("resource") or {}).get("identifier", [])
    }


def wait_written(stack, referral_id: str) -> Referral:
    """The referral once every write landed (the route delivers at once; retried here as the
    outbox worker would, should that attempt not have finished)."""
    db = Database(stack.database_url)
    services = stack.app.app.extensions["handoff"]

    def client(referral, force_refresh=False):
        from smartapp.launch.sessions import client_for_referral

        with stack.app.app.app_context():
            return client_for_referral(services, referral, force_refresh)

    for _ in range(20):
        row = outbox.get(db, referral_id)
        if row.status == "written" and not row.lease_until:
            return row
        outbox.deliver(db, referral_id, client, confirm_wait=0)
    raise AssertionError(f"not written: {outbox.get(db, referral_id).last_error}")


def author(provenance: dict) -> dict:
    return next(a["who"] for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "author")


# -- tests ---------------------------------------------------------------------------------


def test_revoke_cancels_the_task_revokes_the_order_and_names_the_physician(stack):
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P04-pt")
    context_id = context_of(launch)
    url = f"{stack.app.url}/c/{context_id}/amend"
    assert launch.browser.get(url, timeout=15).status_code == 404  # nothing signed yet
    assert "Written to the chart" in sign(stack, launch).text
    (original,) = referrals(stack, "P04-pt")
    fields = amend_form(launch.browser, url)
    assert fields["action"] == "revoke"
    form = fields | {"reason": "changed-mind", "text": "Wants to think it over"}
    answer = launch.browser.post(url, data=form, timeout=30)
    assert answer.status_code == 200 and "the coach referral is revoked" in answer.text

    row = wait_written(stack, original.id)
    fhir = stack.reader("P04-pt")
    ids = written_ids(row)
    task = fhir.get(f"Task/{ids['Task']}")
    assert task["status"] == "cancelled"
    assert "Wants to think it over" in task["statusReason"]["text"]
    assert fhir.get(f"ServiceRequest/{ids['ServiceRequest']}")["status"] == "revoked"
    provenances = fhir.search(f"Provenance?target=Task/{ids['Task']}")
    physician = author(provenances[-1])
    assert physician["reference"].startswith(PHYSICIAN_REF) and physician["display"]

    # Logged as an amendment (who, what, why); the signed decision stays as it was.
    (amended,) = events(stack, "decision-amended", original.id)
    assert amended.data["from"] == "accepted" and amended.data["to"] == "declined"
    assert amended.data["why"] == "The patient changed their mind: Wants to think it over"
    assert amended.data["actor_kind"] == "physician"
    assert amended.user_ref.endswith(physician["reference"])
    assert amended.data["user_name"] == physician["display"]
    assert len(events(stack, "decision", original.id)) == 1
    (unchanged,) = referrals(stack, "P04-pt")
    assert unchanged.decision == original.decision

    # The same form again (a double click, a reload): nothing more is done.
    again = launch.browser.post(url, data=form, timeout=30)
    assert again.status_code == 409 and "Nothing more was changed" in again.text
    assert len(events(stack, "decision-amended", original.id)) == 1


def test_another_browser_is_refused(stack):
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P03-pt")
    context_id = context_of(launch)
    assert "Written to the chart" in sign(stack, launch).text
    url = f"{stack.app.url}/c/{context_id}/amend"
    fields = amend_form(launch.browser, url)
    stranger = requests.Session()
    assert stranger.get(url, timeout=15).status_code == 403
    posted = stranger.post(url, data=fields | {"reason": "changed-mind"}, timeout=15)
    assert posted.status_code == 403
    for route in ("sheet", "sheet.pdf"):
        refused = stranger.get(f"{stack.app.url}/c/{context_id}/{route}", timeout=15)
        assert refused.status_code == 403
    (row,) = referrals(stack, "P03-pt")
    assert events(stack, "decision-amended", row.id) == []


def test_decline_then_accept_places_one_new_referral_even_when_posted_twice(stack):
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P01-pt")
    context_id = context_of(launch)
    signed = sign(stack, launch, decline_coach=True)
    assert signed.status_code == 200, signed.text[:300]
    (original,) = referrals(stack, "P01-pt")
    url = f"{stack.app.url}/c/{context_id}/amend"
    fields = amend_form(launch.browser, url)
    assert fields["action"] == "place"
    form = fields | {"reason": "changed-mind", "consult-mode": "in-person"}
    form["program"] = "bridge-clinic"
    second = requests.Session()
    second.cookies.update(launch.browser.cookies)
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda b: b.post(url, data=form, timeout=30), [launch.browser, second])
        )
    assert sorted(a.status_code for a in answers) == [200, 409]
    rows = referrals(stack, "P01-pt")
    assert len(rows) == 2 and rows[0].id == original.id
    placed = wait_written(stack, rows[1].id)
    assert placed.decision["amends"]["referral"] == original.id
    assert placed.decision["program"].startswith("Example Bridge Clinic")
    fhir = stack.reader("P01-pt")
    orders = fhir.search("ServiceRequest?patient=P01-pt")
    assert [o["status"] for o in orders] == ["active"]
    assert orders[0]["identifier"][0]["value"] in identifiers(placed)
    (amended,) = events(stack, "decision-amended", original.id)
    assert amended.data["new_referral"] == placed.id and amended.data["to"] == "accepted"

    # Revoke it, then place again: three referrals' worth of identifiers, none shared.
    fields = amend_form(launch.browser, url)
    revoke = fields | {"reason": "wrong-choice", "text": "Recorded on the wrong patient's wish"}
    assert launch.browser.post(url, data=revoke, timeout=30).status_code == 200
    wait_written(stack, placed.id)
    fields = amend_form(launch.browser, url)
    assert fields["action"] == "place"
    again = fields | {"reason": "changed-mind", "consult-mode": "telehealth"}
    assert launch.browser.post(url, data=again, timeout=30).status_code == 200
    rows = referrals(stack, "P01-pt")
    assert len(rows) == 3
    third = wait_written(stack, rows[2].id)
    assert not identifiers(third) & identifiers(placed)
    statuses = sorted(o["status"] for o in fhir.search("ServiceRequest?patient=P01-pt"))
    assert statuses == ["active", "revoked"]
    assert len(events(stack, "decision-amended", original.id)) == 3
    # The log still covers the tables (a decision per referral, each handoff's last status).
    from smartapp.audit import coverage

    with Database(stack.database_url).session() as session:
        findings, note = coverage.check(session)
    assert findings == [] and note is None


def test_a_wrong_choice_needs_words(stack):
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P07-pt")
    assert sign(stack, launch).status_code == 200
    url = f"{stack.app.url}/c/{context_of(launch)}/amend"
    fields = amend_form(launch.browser, url)
    if fields["action"] != "revoke":
        pytest.skip("P07 has no coach consult in this pack")
    answer = launch.browser.post(url, data=fields | {"reason": "wrong-choice"}, timeout=30)
    assert answer.status_code == 422 and "Say in a few words what was wrong" in answer.text
