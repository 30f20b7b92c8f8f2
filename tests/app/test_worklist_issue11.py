"""The coach's worklist, complete (issue 11 items 4 and 5), over real HTTP against the sandbox
EHR: coaches hold a server-side staff session (as after sign-in); a physician's SMART launch
signs the visits. What a coach sees for a signed P01 visit; each action refused from the attacker's
side (another coach's handoff, a non-coach, no CSRF token); the contact note rule; the
follow-up plan due and overdue as days pass (the stored times moved back: the clock
controlled); outcomes recorded and logged; reassignment; the telehealth consult's links."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from smartapp.db import CoachHandoff, FollowupContact, LogEvent, Referral
from tests import launch_flow
from tests.stacks import referral_of
from tests.worklist_stack import StaffSession, coach_session, handoff_db, start_worklist_stack

JORDAN, SAM = "Jordan Rivera, CPRS", "Sam Lee, CPRS"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    handle = start_worklist_stack(tmp_path_factory.mktemp("worklist11"), shared_dir)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def jordan(stack) -> StaffSession:
    return coach_session(stack, "demo-coach-1")


@pytest.fixture(scope="module")
def sam(stack) -> StaffSession:
    return coach_session(stack, "demo-coach-2")


def sign(stack, patient: str, mode: str = "in-person", program: str = "", decline=()) -> str:
    """The physician launches on the patient's visit and signs: every suggestion accepted
    except `decline` (declined with the first reason offered); the referral's id."""
    launch = launch_flow.full(stack.app.url, stack.ehr_url, patient)
    page = launch.final.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page[:300]
    form = {"csrf_token": token.group(1), "consult-mode": mode, "program": program}
    for kind in re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', page):
        form[f"decision-{kind}"] = "decline" if kind in decline else "accept"
        if kind in decline:
            select_html = page.split(f'name="reason-{kind}"', 1)[1]
            reason = re.search(r'<option value="([^"]+)"', select_html)
            assert reason
            form[f"reason-{kind}"] = reason.group(1)
            form[f"reason-text-{kind}"] = "Has a kit at home"
    context_id = launch.final.url.rsplit("/", 1)[1]
    signed = launch.browser.post(f"{stack.app.url}/c/{context_id}/sign", data=form, timeout=30)
    assert signed.status_code == 200, signed.text[:300]
    return referral_of(stack.database_url, patient).id


def row_html(page: str, referral_id: str) -> str:
    found = re.search(rf'<tr data-referral="{referral_id}".*?</tr>', page, re.S)
    assert found, f"{referral_id[:8]} not on the worklist"
    return found.group(0)


def state(stack, referral_id: str) -> tuple:
    with handoff_db(stack).session() as session:
        row = session.get(CoachHandoff, referral_id)
        if row is None:
            return ("requested", None, 0, None)
        return (row.status, row.coach_name, row.attempts, row.contact_note)


def events(stack, type_: str, referral_id: str) -> list[LogEvent]:
    with handoff_db(stack).session() as session:
        rows = session.scalars(select(LogEvent).where(LogEvent.type == type_))
        return [e for e in rows if e.data.get("referral") == referral_id]


def days_pass(stack, referral_id: str, days: float) -> None:
    """Move the visit and its follow-up plan `days` into the past (the clock moves on)."""
    shift = timedelta(days=days)
    with handoff_db(stack).session() as session:
        referral = session.get(Referral, referral_id)
        assert referral is not None
        referral.created_at = referral.created_at - shift
        planned = session.scalars(
            select(FollowupContact).where(FollowupContact.referral_id == referral_id)
        )
        for contact in planned:
            contact.due_at = contact.due_at - shift


def test_the_worklist_shows_what_a_coach_works_with_for_a_signed_p01_visit(stack, jordan):
    referral_id = sign(stack, "P01-pt", decline=("naloxone-kit",))
    row = row_html(jordan.page(), referral_id)
    assert "Test P01" in row
    assert 'href="tel:5555550101"' in row and "(555) 555-0101" in row  # Patient.telecom
    assert re.search(r'class="location">ED bed \d+<', row)  # Encounter.location
    assert 'class="signer">Avery Demo, MD<' in row  # the signing physician
    assert re.search(r'class="moud"><strong>MOUD</strong> [^<]*: accepted', row)
    assert re.search(r'class="naloxone"><strong>Naloxone</strong> [^<]*: declined, ', row)
    assert "Has a kit at home" in row
    assert "Handoff: emergency department substance use linkage note" in row  # the note
    assert re.search(r'class="waiting">Waiting \d+ min<', row)
    assert 'data-status="requested">team queue<' in row and "Day 1: <span" in row
    [decision] = events(stack, "decision", referral_id)  # the permanent log: no phone, no bed
    logged = json.dumps(decision.data)  # (not "555" alone: a time or an id may hold it)
    assert "contact" not in decision.data["shown"] and "ED bed" not in logged
    assert not any(phone in logged for phone in ("5555550101", "555-0101", "555) 555"))

    assert jordan.post(f"/worklist/{referral_id}/accept").status_code == 302
    row = row_html(jordan.page(), referral_id)
    assert re.search(r'class="waiting">Waited \d+ min for a coach<', row)  # counted to accept
    assert 'data-status="accepted"' in row and JORDAN in row
    consent = f'href="/staff/handoffs/{referral_id}/consent">Record consent to share</a>'
    assert consent in row  # the partner consent form (helper H4's route), for the coach's own
    [accepted] = events(stack, "coach-accept", referral_id)
    assert accepted.data["user_name"] == JORDAN and accepted.data["actor_kind"] == "coach"
    assert accepted.user_ref == "Practitioner/demo-coach-1"  # the coach, not the physician


def test_another_coach_a_non_coach_and_a_forged_form_change_nothing(stack, jordan, sam):
    referral_id = sign(stack, "P05-pt")
    jordan.page()
    assert jordan.post(f"/worklist/{referral_id}/accept").status_code == 302
    before = state(stack, referral_id)
    sam.page()
    attempts = [
        (f"/worklist/{referral_id}/contact", {"result": "reached", "note": "hello"}),
        (f"/worklist/{referral_id}/link", {"program": "bridge-clinic"}),
        (f"/worklist/{referral_id}/close", {"reason": "Other"}),
        (f"/worklist/{referral_id}/accept", {}),
        (f"/worklist/{referral_id}/followup/1", {"result": "no-answer"}),
    ]
    for path, form in attempts:
        answer = sam.post(path, **form)
        assert answer.status_code == 302, path
        message = sam.flash()
        assert "belongs to Jordan Rivera" in message or "Already accepted by Jordan" in message
    answer = sam.post(
        f"/worklist/{referral_id}/reassign", to=_ref_of(stack, "Sam Lee"), note="mine now"
    )
    assert answer.status_code == 302 and "belongs to Jordan Rivera" in sam.flash()
    assert state(stack, referral_id) == before
    assert events(stack, "coach-contact", referral_id) == []
    assert events(stack, "handoff-reassign", referral_id) == []
    assert events(stack, "followup-attempt", referral_id) == []

    auditor = coach_session(stack, "demo-auditor", roles=("auditor",))
    assert auditor.http.get(f"{stack.app.url}/worklist/", timeout=10).status_code == 403
    for path, form in attempts:
        assert auditor.post(path, csrf=False, **form).status_code == 403
    assert auditor.http.get(f"{stack.app.url}/worklist/live", timeout=10).status_code == 403

    for path, form in attempts:
        assert jordan.post(path, csrf=False, **form).status_code == 400  # no CSRF token
    assert (
        jordan.post(
            f"/worklist/{referral_id}/close", csrf_token="forged", reason="Other", csrf=False
        ).status_code
        == 400
    )
    assert state(stack, referral_id) == before


def _ref_of(stack, name: str) -> str:
    with handoff_db(stack).session() as session:
        from smartapp.db import StaffSession as Row

        return next(r.user_ref for r in session.scalars(select(Row)) if r.name.startswith(name))


def test_contact_attempts_need_a_note_where_the_result_does(stack, jordan):
    referral_id = sign(stack, "P13-pt")
    jordan.page()
    jordan.post(f"/worklist/{referral_id}/accept")
    page = jordan.page()
    row = row_html(page, referral_id)
    assert "Reached (note needed)" in row and "Declined (note needed)" in row  # said in the UI
    assert ">No answer<" in row

    jordan.post(f"/worklist/{referral_id}/contact", result="reached", note="   ")
    assert "A note is needed when the patient was reached" in jordan.flash()
    jordan.post(f"/worklist/{referral_id}/contact", result="declined", note="")
    assert "A note is needed when the patient was declined" in jordan.flash()
    assert state(stack, referral_id) == ("accepted", JORDAN, 0, None)

    jordan.post(f"/worklist/{referral_id}/contact", result="no-answer", note="")
    assert state(stack, referral_id) == ("accepted", JORDAN, 1, None)
    jordan.post(f"/worklist/{referral_id}/contact", result="reached", note="Agrees to see us")
    assert state(stack, referral_id) == ("in-progress", JORDAN, 2, "Agrees to see us")
    logged = [
        (e.data["result"], e.data["note"]) for e in events(stack, "coach-contact", referral_id)
    ]
    assert logged == [("no-answer", None), ("reached", "Agrees to see us")]
    [step] = events(stack, "handoff-status", referral_id)
    assert step.data["business_status"] == "contacted"

    [task] = stack.reader("P13-pt").search("Task?patient=P13-pt")  # the EHR's Task followed
    assert task["status"] == "in-progress"
    assert task["businessStatus"]["coding"][0]["code"] == "contacted"
    assert task["owner"]["display"] == JORDAN


def test_follow_up_falls_due_and_overdue_and_outcomes_are_logged(stack, jordan):
    referral_id = sign(stack, "P15-pt")
    jordan.page()
    jordan.post(f"/worklist/{referral_id}/accept")
    row = row_html(jordan.page(), referral_id)
    assert re.search(r'data-day="1">Day 1: <span class="fu-state">upcoming', row)
    assert "Day 1 attempt" not in row and "Record contact" in row  # in the ED: one contact form

    days_pass(stack, referral_id, 1.5)
    row = row_html(jordan.page(), referral_id)
    assert re.search(r'data-day="1">Day 1: <span class="fu-state">due', row)
    days_pass(stack, referral_id, 1)  # 2.5 days: day 1 overdue (24 h), day 3 not yet due
    row = row_html(jordan.page(), referral_id)
    assert re.search(r'class="contact-overdue" data-day="1"', row)
    assert re.search(r'class="contact-upcoming" data-day="3"', row)
    assert "Day 1 attempt" in row  # the form for the next contact

    jordan.post(f"/worklist/{referral_id}/followup/1", result="reached", note="")
    assert "A note is needed when the patient was reached" in jordan.flash()
    jordan.post(f"/worklist/{referral_id}/followup/1", result="no-answer", note="Voicemail")
    row = row_html(jordan.page(), referral_id)
    assert re.search(r'class="contact-done" data-day="1">Day 1: <span class="fu-state">done', row)
    [attempt] = events(stack, "followup-attempt", referral_id)
    assert (attempt.data["day"], attempt.data["result"], attempt.data["user_name"]) == (
        1,
        "no-answer",
        JORDAN,
    )

    # The handoff closes; its follow-up keeps it on the list while something is due.
    jordan.post(f"/worklist/{referral_id}/close", reason="Linked to a program", note="phone")
    days_pass(stack, referral_id, 29)  # 31.5 days after the visit
    row = row_html(jordan.page(), referral_id)
    assert 'data-status="completed"' in row and "Record consent to share" not in row
    assert "Outcome at 7 days" in row and "Outcome at 30 days" in row
    assert "Outcome at 90 days" not in row
    jordan.post(f"/worklist/{referral_id}/outcome/30", outcome="in-treatment")
    jordan.post(f"/worklist/{referral_id}/outcome/7", outcome="reached")
    row = row_html(jordan.page(), referral_id)
    assert "Day 30 outcome: In treatment" in row and "Day 7 outcome: Reached" in row
    logged = [
        (e.data["day"], e.data["outcome"]) for e in events(stack, "followup-outcome", referral_id)
    ]
    assert logged == [(30, "in-treatment"), (7, "reached")]
    jordan.post(f"/worklist/{referral_id}/outcome/90", outcome="lost")
    assert "90-day outcome can be recorded from" in jordan.flash()


def test_a_coach_hands_a_handoff_to_another_coach(stack, jordan, sam):
    referral_id = sign(stack, "P14-pt")
    sam.page()  # Sam is on shift (signed in)
    jordan.page()
    jordan.post(f"/worklist/{referral_id}/accept")
    row = row_html(jordan.page(), referral_id)
    assert "Hand over to" in row and SAM in row
    sam_ref = _ref_of(stack, "Sam Lee")
    jordan.post(f"/worklist/{referral_id}/reassign", to=sam_ref)
    assert f"Handed over to {SAM}" in jordan.flash()
    assert state(stack, referral_id)[:2] == ("accepted", SAM)
    [moved] = events(stack, "handoff-reassign", referral_id)
    assert (moved.data["to"], moved.data["to_name"], moved.data["user_name"]) == (
        sam_ref,
        SAM,
        JORDAN,
    )
    jordan.post(f"/worklist/{referral_id}/reassign", to="urn:staff:nobody")
    assert "Choose one of the coaches listed" in jordan.flash()


def test_a_telehealth_consult_shows_the_programs_call_and_video_links(stack, sam):
    referral_id = sign(stack, "P19-pt", mode="telehealth", program="bridge-telehealth")
    row = row_html(sam.page(), referral_id)
    assert 'href="tel:5555550113"' in row
    assert 'href="https://video.example.org/bridge-tele-moud"' in row
    assert "Coach consult</strong> telehealth" in row


def test_a_warm_line_consult_without_a_program_shows_the_warm_line(stack, sam):
    referral_id = sign(stack, "P21-pt", mode="warm-line")
    row = row_html(sam.page(), referral_id)
    assert "Example Peer Recovery Warmline" in row and 'href="tel:5555550142"' in row
    assert "join video" not in row  # the warm line has no video link in the catalog


def test_a_consent_on_file_shows_who_the_handoff_is_shared_with(stack, sam):
    from smartapp.partners.models import PartnerConsent

    referral_id = sign(stack, "P22-pt")
    first = sam.http.get(f"{stack.app.url}/worklist/live?closed=0", timeout=20).json()
    before = next(r["version"] for r in first["rows"] if r["id"] == referral_id)
    assert "Shared with" not in row_html(sam.page(), referral_id)
    with handoff_db(stack).session() as session:  # as the consent form stores it (helper H4)
        session.add(
            PartnerConsent(
                id="consent-test-1",
                referral_id=referral_id,
                partner_id="example-bridge",
                purpose="TREAT",
                status="active",
                resource={"resourceType": "Consent"},
            )
        )
    row = row_html(sam.page(), referral_id)
    assert "Shared with example-bridge (consent on file)" in row  # no partner file: its id
    again = sam.http.get(f"{stack.app.url}/worklist/live?closed=0", timeout=20).json()
    assert next(r["version"] for r in again["rows"] if r["id"] == referral_id) != before


def test_the_live_endpoint_answers_small_while_nothing_changed(stack, sam):
    sign(stack, "P20-pt")
    first = sam.http.get(f"{stack.app.url}/worklist/live?closed=0", timeout=20).json()
    assert first["changed"] and {"id", "version", "html"} <= set(first["rows"][0])
    again = sam.http.get(
        f"{stack.app.url}/worklist/live?closed=0&v={first['version']}", timeout=20
    ).json()
    assert again == {"version": first["version"], "changed": False}
