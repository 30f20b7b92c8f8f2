"""The card's draft orders follow the registration's write profile (pure, in process): where
the EHR takes orders only through CDS Hooks (epic), the coach referral is a draft
ServiceRequest for the order cart with Handoff's identifier; elsewhere (fhir-rest) Handoff
writes it after the accept, so the card carries none; buprenorphine and naloxone are draft
MedicationRequests without a dose. Every summary stays under 140 characters."""

from __future__ import annotations

import pytest

from smartapp.cdshooks import cards
from smartapp.cdshooks.models import HookRequest, PatientContext
from smartapp.cdshooks.service import Call, accept_all
from smartapp.fhir.chart import ChartRead
from smartapp.launch.registrations import WriteSettings
from smartapp.screen.service import shown_from_read
from tests.cdshooks.test_equal_by_construction import EXPECTED, NOW, PACK, SETTINGS, chart

ISS = "https://ehr.example/fhir"


def shown_and_call(name: str) -> tuple[dict, Call]:
    case = EXPECTED["cases"][name]
    patient, encounter = case["patient"], case["encounter"]
    shown = shown_from_read(
        ChartRead(resources=chart(name)), [], PACK, SETTINGS, NOW, encounter, patient, []
    )
    context = {"userId": "Practitioner/p1", "patientId": patient, "encounterId": encounter}
    request = HookRequest(
        hook="patient-view", hookInstance="9368d37b-283f-44a0-93ea-547cebab93ed", context=context
    )
    return shown, Call(request, PatientContext.model_validate(context), ISS, "x")


@pytest.mark.parametrize("profile", ["epic", "fhir-rest", "oracle-health"])
def test_draft_orders_follow_the_write_profile(profile):
    shown, call = shown_and_call("P01-oud-withdrawal")
    signed = accept_all(call, shown, "P01-enc", NOW)
    write = WriteSettings(profile=profile)
    orders = cards.draft_orders(shown, signed, write, "urn:handoff:referral")
    if profile == "epic":
        order = orders["prc-consult"]
        assert order["resourceType"] == "ServiceRequest" and order["status"] == "draft"
        assert order["identifier"][0]["system"] == "urn:handoff:referral"
    else:
        assert "prc-consult" not in orders
    for kind in ("moud-buprenorphine", "naloxone-kit"):
        draft = orders[kind]
        assert (draft["status"], draft["intent"]) == ("draft", "proposal")
        assert "dosageInstruction" not in draft and "dispenseRequest" not in draft


@pytest.mark.parametrize("name", sorted(EXPECTED["cases"]))
def test_summary_is_one_short_line(name):
    shown, _call = shown_and_call(name)
    if shown["suggestions"]:
        text = cards.summary(shown)
        assert len(text) < 140 and "\n" not in text
