"""The physician's screen over HTTP (issue 9): choices survive an error page, a second window
is told the visit was already signed, and each suggestion offers only its own decline reasons.

A stack of its own (sandbox + Handoff on real ports, own databases), so visits signed here are
not signed by other test modules and vice versa."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import requests
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import Database, Referral
from tests import launch_flow
from tests.stacks import start_stack


def keys_apart(tmp_path_factory) -> dict:
    """Handoff's keys in a folder of their own, away from the database's folder."""
    keys = tmp_path_factory.mktemp("issue9-keys")
    return {"KEYS_DIR": str(keys / "keys"), "AUDIT_SIGNING_KEY": str(keys / "audit.pem")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp("issue9-screen"), shared_dir, **keys_apart(tmp_path_factory)
    )
    yield stack
    stack.stop()


class FormReader(HTMLParser):
    """What a browser would submit from the page's Sign form as it stands: checked radios,
    selected options (else the first), input values. No JavaScript, like a plain browser."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.action: str | None = None
        self._in_form = False
        self._select: str | None = None
        self._first_option: str | None = None
        self._selected = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and "suggestions" in (a.get("class") or ""):
            self._in_form, self.action = True, a.get("action")
        if not self._in_form:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("radio", "checkbox"):
                if "checked" in a:
                    self.values[a["name"]] = a.get("value", "on")
            else:
                self.values[a["name"]] = a.get("value", "")
        elif tag == "select" and a.get("name"):
            self._select, self._first_option, self._selected = a["name"], None, False
        elif tag == "option" and self._select:
            if self._first_option is None:
                self._first_option = a.get("value", "")
            if "selected" in a:
                self.values[self._select], self._selected = a.get("value", ""), True

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        if tag == "select" and self._select:
            if not self._selected:
                self.values[self._select] = self._first_option or ""
            self._select = None


def form_of(html: str) -> dict[str, str]:
    reader = FormReader()
    reader.feed(html)
    assert reader.action, "the page has no Sign form"
    return reader.values


def options_of(html: str, select_id: str) -> list[str]:
    block = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', html, re.S).group(1)
    return [v for v in re.findall(r'<option value="([^"]*)"', block) if v]


def open_screen(stack, patient_id: str, browser: requests.Session | None = None):
    launch = launch_flow.authorize(
        launch_flow.start(stack.app.url, stack.ehr_url, patient_id, browser)
    )
    launch_flow.finish(launch)
    assert launch.final.status_code == 200, launch.final.text[:300]
    return launch


def sign_url(stack, launch) -> str:
    return f"{stack.app.url}/c/{launch.final.url.rsplit('/', 1)[1]}/sign"


def referral_of(stack, patient_id: str) -> Referral | None:
    with Database(stack.database_url).session() as session:
        return session.scalars(select(Referral).where(Referral.patient_id == patient_id)).first()


DECLINE_COACH = {
    "decision-prc-consult": "decline",
    "reason-prc-consult": "patient-declined",
    "reason-text-prc-consult": "wants to talk to family first",
    "decision-moud-buprenorphine": "accept",
    "consult-mode": "telehealth",
    "program-other": "Harbor recovery group",
}


def test_choices_survive_an_error_page_and_the_decline_stands(stack):
    """Issue 9 item 1: decline the coach with a reason, accept buprenorphine, leave naloxone
    blank, Sign: the error page keeps every choice; fix naloxone, Sign: the decline stands."""
    launch = open_screen(stack, "P01-pt")
    first_form = form_of(launch.final.text)
    assert first_form["decision-prc-consult"] == "accept"  # opt-out: pre-selected
    sent = first_form | DECLINE_COACH
    sent.pop("decision-naloxone-kit", None)
    error_page = launch.browser.post(sign_url(stack, launch), data=sent, timeout=30)
    assert error_page.status_code == 422
    assert "Not signed yet" in error_page.text
    assert "Naloxone kit to take home: choose to accept or decline." in error_page.text
    again = form_of(error_page.text)
    for name, value in DECLINE_COACH.items():
        assert again.get(name) == value, (name, again.get(name))
    assert "decision-naloxone-kit" not in again  # still blank, not silently chosen
    assert referral_of(stack, "P01-pt") is None

    # The physician fixes only the flagged item and signs the page as it stands.
    signed = launch.browser.post(
        sign_url(stack, launch), data=again | {"decision-naloxone-kit": "accept"}, timeout=30
    )
    assert signed.status_code == 200
    assert "Written to the chart" in signed.text
    decisions = {d["kind"]: d for d in referral_of(stack, "P01-pt").decision["decisions"]}
    assert decisions["prc-consult"] == {
        "kind": "prc-consult",
        "accepted": False,
        "reason": "Patient declined",
        "text": "wants to talk to family first",
    }
    assert decisions["moud-buprenorphine"]["accepted"] is True
    assert decisions["naloxone-kit"]["accepted"] is True
    assert referral_of(stack, "P01-pt").decision["consult_mode"] == "telehealth"
    # The declined referral was never sent to the EHR.
    assert stack.reader("P01-pt").search("ServiceRequest?patient=P01-pt") == []
    assert re.search(
        r'data-decision="declined">\s*<strong>Declined</strong>: Patient declined', signed.text
    )


def test_each_suggestion_offers_only_its_own_decline_reasons(stack):
    """Issue 9 item 3: "Coach unavailable" is a reason for the coach consult only."""
    launch = open_screen(stack, "P05-pt")
    html = launch.final.text
    assert "coach-unavailable" in options_of(html, "reason-prc-consult")
    for kind in ("moud-buprenorphine", "naloxone-kit"):
        reasons = options_of(html, f"reason-{kind}")
        assert reasons == [
            "patient-declined",
            "in-treatment-elsewhere",
            "clinically-inappropriate",
            "other",
        ]
    # A forged post of the coach's reason for buprenorphine is refused, not recorded.
    form = form_of(html) | {
        "decision-moud-buprenorphine": "decline",
        "reason-moud-buprenorphine": "coach-unavailable",
        "decision-naloxone-kit": "accept",
    }
    answer = launch.browser.post(sign_url(stack, launch), data=form, timeout=30)
    assert answer.status_code == 422
    assert "Offer buprenorphine: pick a reason for declining." in answer.text
    assert referral_of(stack, "P05-pt") is None


def test_second_window_is_told_the_visit_was_signed_and_what_of_its_was_not_sent(stack):
    """Issue 9 item 2: window A signs; window B's Sign says so (by whom, when, what was
    written) and lists B's own choices that were not sent; the event is logged."""
    window_a = open_screen(stack, "P14-pt")
    window_b = open_screen(stack, "P14-pt")  # another window (another browser) on the visit
    form_a = form_of(window_a.final.text)
    kinds = re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', window_a.final.text)
    assert "prc-consult" in kinds and "naloxone-kit" in kinds
    signed_a = window_a.browser.post(
        sign_url(stack, window_a),
        data=form_a | {f"decision-{k}": "accept" for k in kinds},
        timeout=30,
    )
    assert "Written to the chart" in signed_a.text
    written = referral_of(stack, "P14-pt")

    form_b = (
        form_of(window_b.final.text)
        | {f"decision-{k}": "accept" for k in kinds}
        | {
            "decision-naloxone-kit": "decline",
            "reason-naloxone-kit": "in-treatment-elsewhere",
            "reason-text-naloxone-kit": "has a kit at home",
        }
    )
    answer = window_b.browser.post(sign_url(stack, window_b), data=form_b, timeout=30)
    assert answer.status_code == 409
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", answer.text))
    assert "This visit was already signed" in text
    # the signer by name (as read at launch), not a Practitioner reference (issue 13)
    assert f"by {written.decision['shown']['signer_name']}" in text
    assert written.user_ref not in text
    assert written.created_at.strftime("%Y-%m-%d %H:%M") in text
    assert "Your Sign was not sent" in text
    conflict = re.search(r'<section class="conflict".*?</section>', answer.text, re.S).group(0)
    conflict_text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", conflict))
    assert "Naloxone kit to take home: accepted" in conflict_text  # what was written
    assert (
        "Naloxone kit to take home: declined (Already in treatment elsewhere: has a kit at home)"
        in conflict_text
    )  # B's choice, not sent
    assert "Written to the chart" in answer.text  # what the chart holds, with the ids
    # Nothing of B's reached the chart: one referral, A's.
    assert referral_of(stack, "P14-pt").id == written.id
    assert referral_of(stack, "P14-pt").decision == written.decision
    assert len(stack.reader("P14-pt").search("ServiceRequest?patient=P14-pt")) == 1
    with Database(stack.database_url).session() as session:
        events = session.scalars(select(LogEvent).where(LogEvent.type == "sign-after-signed")).all()
    assert len(events) == 1
    assert events[0].data["referral"] == written.id
    assert events[0].data["not_sent"] == [
        {
            "kind": "naloxone-kit",
            "accepted": False,
            "reason": "Already in treatment elsewhere",
            "text": "has a kit at home",
        }
    ]


def test_double_click_in_the_same_window_is_not_a_conflict(stack):
    launch = open_screen(stack, "P15-pt")
    form = form_of(launch.final.text)
    kinds = re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', launch.final.text)
    form |= {f"decision-{k}": "accept" for k in kinds}
    first = launch.browser.post(sign_url(stack, launch), data=form, timeout=30)
    second = launch.browser.post(sign_url(stack, launch), data=form, timeout=30)
    assert first.status_code == second.status_code == 200
    assert "already signed" not in second.text
    assert "Written to the chart" in second.text


def test_a_page_no_longer_the_latest_shown_cannot_sign(stack):
    """The same launch shown again (a reload in another window: a newer evaluation): the
    older page's Sign is refused with 409 and nothing is signed; the newer page signs."""
    launch = open_screen(stack, "P07-pt")
    old_form = form_of(launch.final.text)
    assert old_form["shown_at"]
    kinds = re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', launch.final.text)
    accept = {f"decision-{k}": "accept" for k in kinds}
    newer = launch.browser.get(launch.final.url, timeout=30)
    new_form = form_of(newer.text)
    assert new_form["shown_at"] != old_form["shown_at"]
    stale = launch.browser.post(sign_url(stack, launch), data=old_form | accept, timeout=30)
    assert stale.status_code == 409
    assert "The screen changed since this page was shown" in stale.text
    assert referral_of(stack, "P07-pt") is None
    signed = launch.browser.post(sign_url(stack, launch), data=new_form | accept, timeout=30)
    assert signed.status_code == 200 and "Written to the chart" in signed.text


# ---------------------------------------------------------------------------------------
# Item 26: Sign has a deadline (a slow EHR behind a real proxy)

SIGN_WAIT = 1.5
EHR_DELAY = 6.0


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp("issue9-slow"),
        shared_dir,
        proxy=True,
        SIGN_WAIT_SECONDS=SIGN_WAIT,
        **keys_apart(tmp_path_factory),
    )
    yield stack
    stack.stop()


def test_sign_answers_within_its_deadline_and_the_write_lands_once_later(slow_stack):
    """Issue 9 item 26: the EHR holds the write for 6 s; Sign answers in about 1.5 s with
    "queued, writing", the status follows the write, and the referral lands exactly once."""
    import time

    stack = slow_stack
    launch = open_screen(stack, "P02-pt")
    # Every kind of request to the FHIR API is slow: reads (who signs) and the write.
    stack.proxy.add_fault("delay", method="GET", path="/fhir", seconds=EHR_DELAY, times=5)
    stack.proxy.add_fault("delay", method="POST", path="/fhir", seconds=EHR_DELAY)
    started = time.monotonic()
    signed = launch_flow.sign_all(launch, stack.app.url)
    took = time.monotonic() - started
    stack.proxy.clear_faults()  # what was not used yet; the write in flight stays slow
    assert signed.status_code == 200
    assert took < SIGN_WAIT + 1.5, took
    assert "Queued, writing to the chart" in signed.text
    assert "data-status-url=" in signed.text
    status_url = f"{stack.app.url}/c/{launch.final.url.rsplit('/', 1)[1]}/status"
    assert launch.browser.get(status_url, timeout=5).json() == {
        "status": "queued",
        "attempts": 0,
        "writing": True,
    }
    assert requests.get(status_url, timeout=5).status_code == 403  # another browser: refused
    deadline = time.monotonic() + EHR_DELAY + 15
    while time.monotonic() < deadline:
        now = launch.browser.get(status_url, timeout=5).json()
        if now["status"] != "queued":
            break
        time.sleep(0.3)
    assert now == {"status": "written", "attempts": 1, "writing": False}
    assert time.monotonic() - started >= EHR_DELAY - 0.5  # it really waited for the EHR
    reader = stack.reader("P02-pt")
    for type_ in ("ServiceRequest", "DocumentReference", "Task"):
        assert len(reader.search(f"{type_}?patient=P02-pt")) == 1, type_
    page = launch.browser.get(launch.final.url, timeout=10)
    assert "Written to the chart" in page.text and "data-status-url" not in page.text


def test_two_windows_signing_at_once_one_is_written_the_other_is_told(stack):
    """Item 2, the race: both windows press Sign together; one referral is written, and the
    other window is told, with its own choices that were not sent."""
    from concurrent.futures import ThreadPoolExecutor

    windows = [open_screen(stack, "P11-pt"), open_screen(stack, "P11-pt")]
    forms = []
    for i, window in enumerate(windows):
        form = form_of(window.final.text)
        kinds = re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', window.final.text)
        form |= {f"decision-{k}": "accept" for k in kinds}
        if i == 1:
            form |= {"decision-prc-consult": "decline", "reason-prc-consult": "coach-unavailable"}
        forms.append(form)
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda wf: wf[0].browser.post(sign_url(stack, wf[0]), data=wf[1], timeout=30),
                zip(windows, forms, strict=True),
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 409]
    written = referral_of(stack, "P11-pt")
    loser = next(a for a in answers if a.status_code == 409)
    assert "This visit was already signed" in loser.text
    not_sent = re.search(r'<ul class="conflict-not-sent">(.*?)</ul>', loser.text, re.S).group(1)
    prc_written = next(d for d in written.decision["decisions"] if d["kind"] == "prc-consult")
    if prc_written["accepted"]:  # window A won: B's decline was not sent, and B is told
        assert not_sent == "<li>Peer recovery coach consult: declined (Coach unavailable)</li>"
    else:  # window B won: A's acceptance was not sent, and A is told
        assert not_sent == "<li>Peer recovery coach consult: accepted</li>"
    with Database(stack.database_url).session() as session:
        rows = session.scalars(select(Referral).where(Referral.patient_id == "P11-pt")).all()
    assert [r.id for r in rows] == [written.id]
