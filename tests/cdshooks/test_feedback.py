"""Feedback over HTTP against the sandbox EHR: an accepted card is the physician's signed
decision (one referral row, the `decision` event, the write-back with Handoff's backend access,
the warm handoff's Task) exactly once, whether the card, the app, or both are used; the card's
draft orders are placed by the EHR (the order cart) and not written again; an override with
the pack's reason is logged and writes nothing; a decided visit gets no new offer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import Database, Referral
from smartapp.writeback.resources import referral_key
from tests import launch_flow
from tests.cdshooks.cds_client import PATIENT_VIEW, accepted, prefetch_from
from tests.cdshooks.conftest import CdsStack, start_cds_stack
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.smart_helpers import FhirReader, token_for

SYSTEM = "urn:handoff:referral"


@pytest.fixture(scope="module")
def cds(tmp_path_factory, shared_dir) -> Iterator[CdsStack]:
    """A stack of its own: these tests decide visits (which then get no card)."""
    found = start_cds_stack(tmp_path_factory.mktemp("cdshooks-feedback"), shared_dir)
    try:
        yield found
    finally:
        found.stack.stop()


def card_for(cds, patient: str, encounter: str) -> dict:
    prefetch = prefetch_from(cds.client.discovery(), PATIENT_VIEW, cds.reader(patient), patient)
    status, answer = cds.client.call(cds.client.request(patient, encounter, prefetch))
    assert status == 200, answer
    (card,) = answer["cards"]
    return card


def no_offer(cds, patient: str, encounter: str) -> bool:
    prefetch = prefetch_from(cds.client.discovery(), PATIENT_VIEW, cds.reader(patient), patient)
    status, answer = cds.client.call(cds.client.request(patient, encounter, prefetch))
    assert status == 200, answer
    return answer["cards"] == []


def referrals(cds, patient: str) -> list[Referral]:
    with Database(cds.stack.database_url).session() as session:
        rows = list(session.scalars(select(Referral).where(Referral.patient_id == patient)))
        session.expunge_all()
        return rows


def written(cds, patient: str, seconds: float = 20.0) -> Referral:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        (row,) = referrals(cds, patient)
        if row.status == "written":
            return row
        time.sleep(0.3)
    raise AssertionError(f"not written: {row.status} {row.last_error}")


def at_ehr(cds, patient: str, rtype: str, kind: str, encounter: str) -> list[dict]:
    key = referral_key(cds.fhir_base, encounter, patient, kind)
    return cds.reader(patient).search(f"{rtype}?identifier={SYSTEM}|{key}")


def events(cds, type_: str, patient: str) -> list[LogEvent]:
    with Database(cds.stack.database_url).session() as session:
        query = select(LogEvent).where(LogEvent.type == type_, LogEvent.patient_id == patient)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def order_cart(cds, patient: str, card: dict, labels: list[str]) -> None:
    """What the EHR does with the accepted suggestions' actions: places the draft orders."""
    token = token_for(
        cds.stack.ehr_url,
        patient,
        TEST_READER,
        TEST_READER_REDIRECT,
        "launch openid fhirUser patient/*.cruds",
    )
    ehr = FhirReader(cds.fhir_base, token["access_token"])
    import requests

    for suggestion in card["suggestions"]:
        if suggestion["label"] not in labels:
            continue
        for action in suggestion.get("actions", []):
            resource = action["resource"]
            response = requests.post(
                f"{cds.fhir_base}/{resource['resourceType']}",
                json=resource,
                headers=ehr.headers | {"Content-Type": "application/fhir+json"},
                timeout=10,
            )
            assert response.status_code in (200, 201), response.text


def test_accept_on_the_card_writes_one_referral_once(cds):
    patient, encounter = "P01-pt", "P01-enc"
    card = card_for(cds, patient, encounter)
    labels = [s["label"] for s in card["suggestions"]]
    order_cart(cds, patient, card, labels)
    item = accepted(card)
    response = cds.client.feedback(PATIENT_VIEW, [item])
    assert response.status_code == 200, response.text
    assert response.json()["cards"][card["uuid"]] == "signed"
    row = written(cds, patient)
    assert {d["kind"] for d in row.decision["decisions"]} == {
        s["kind"] for s in card["extension"]["handoff-offer"]["suggestions"]
    }
    (decision,) = events(cds, "decision", patient)
    assert decision.data["entry"] == "cds-hooks" and decision.data["referral"] == row.id
    assert len(at_ehr(cds, patient, "ServiceRequest", "prc-consult", encounter)) == 1
    assert len(at_ehr(cds, patient, "Task", "prc-consult-task", encounter)) == 1
    # the card's draft orders, placed by the EHR, are not written a second time
    assert len(at_ehr(cds, patient, "MedicationRequest", "naloxone-kit-draft", encounter)) == 1
    # the same feedback again (a retry) and a second accept: nothing new
    again = cds.client.feedback(PATIENT_VIEW, [item])
    assert again.status_code == 200 and again.json()["cards"][card["uuid"]] == "already-signed"
    assert len(referrals(cds, patient)) == 1
    assert len(at_ehr(cds, patient, "ServiceRequest", "prc-consult", encounter)) == 1
    assert no_offer(cds, patient, encounter)
    # then the physician opens Handoff from the card's link: the visit shows as signed
    launch = launch_flow.full(cds.stack.app.url, cds.stack.ehr_url, patient)
    assert launch.final.status_code == 200
    assert 'name="decision-prc-consult"' not in launch.final.text  # no Sign form again
    assert len(referrals(cds, patient)) == 1


def test_signed_in_the_app_then_accepted_on_the_card_is_one_referral(cds):
    patient, encounter = "P05-pt", "P05-enc"
    card = card_for(cds, patient, encounter)  # shown before the physician opens Handoff
    launch = launch_flow.full(cds.stack.app.url, cds.stack.ehr_url, patient)
    assert 'name="decision-prc-consult"' in launch.final.text  # the Sign form, unsigned
    signed = launch_flow.sign_all(launch, cds.stack.app.url)
    assert signed.status_code in (200, 303), signed.text[:500]
    (row,) = referrals(cds, patient)
    assert row.encounter_id == encounter
    response = cds.client.feedback(PATIENT_VIEW, [accepted(card)])
    assert response.status_code == 200
    assert response.json()["cards"][card["uuid"]] == "already-signed"
    assert len(referrals(cds, patient)) == 1
    assert len(events(cds, "decision", patient)) == 1
    written(cds, patient)
    assert len(at_ehr(cds, patient, "ServiceRequest", "prc-consult", encounter)) == 1
    assert no_offer(cds, patient, encounter)


def test_override_with_a_reason_is_logged_and_writes_nothing(cds):
    patient, encounter = "P02-pt", "P02-enc"
    card = card_for(cds, patient, encounter)
    reason = next(r for r in card["overrideReasons"] if r["code"] == "patient-declined")
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": reason, "userComment": "wants to think about it"},
        "outcomeTimestamp": "2026-11-20T15:05:00Z",
    }
    response = cds.client.feedback(PATIENT_VIEW, [item])
    assert response.status_code == 200, response.text
    assert response.json()["cards"][card["uuid"]] == "overridden"
    (event,) = events(cds, "cds-override", patient)
    assert {d["reason"] for d in event.data["decisions"]} == {"Patient declined"}
    assert all(d["accepted"] is False for d in event.data["decisions"])
    assert referrals(cds, patient) == []
    assert at_ehr(cds, patient, "ServiceRequest", "prc-consult", encounter) == []
    assert no_offer(cds, patient, encounter)
    # an override reason the card did not offer is refused
    other = card_for(cds, "P13-pt", "P13-enc")
    bad = item | {"card": other["uuid"]}
    bad["overrideReason"] = {"reason": {"system": reason["system"], "code": "made-up"}}
    assert cds.client.feedback(PATIENT_VIEW, [bad]).status_code == 400


def test_feedback_for_a_card_not_given_is_refused(cds):
    item = accepted({"uuid": "9368d37b-283f-44a0-93ea-547cebab93ed", "suggestions": []})
    item["acceptedSuggestions"] = [{"id": "9368d37b-283f-44a0-93ea-547cebab93ee"}]
    response = cds.client.feedback(PATIENT_VIEW, [item])
    assert response.status_code == 400


def test_the_referral_log_verifies_after_cards_and_feedback(cds):
    """What the cards showed, the decisions and overrides: the chain recomputes, and the log
    still covers the referral tables (the group writer appends as a request does)."""
    from smartapp.audit import coverage
    from smartapp.audit.verify import verify

    card_for(cds, "P14-pt", "P14-enc")
    with Database(cds.stack.database_url).session() as session:
        report = verify(session, max_unsigned=None, cross_check=True)
        findings, note = coverage.check(session)
    assert report.ok, report
    assert findings == [] and note is None
