"""The card's accept against a FHIR server nobody on this team wrote (Medplum's engine, the
peer in ../shared/peers/fhir-server, seeded with the scenarios): the CDS client prefetches
from Medplum, places the card's draft orders there (its order cart), accepts; the outbox
delivers the referral (here with a client for Medplum, which has no authentication, as the
outbox worker would with Handoff's credentials): exactly one ServiceRequest, one Task, one
draft naloxone order for the visit, even after a second accept and a retried delivery."""

from __future__ import annotations

import time

import requests

from smartapp.db import Database
from smartapp.fhir.client import FhirClient
from smartapp.web.serving import reserve_port
from smartapp.writeback import outbox
from smartapp.writeback.resources import referral_key
from tests.cdshooks.cds_client import PATIENT_VIEW, CdsClient, accepted, new_key, trust
from tests.conftest import start_app, write_registration
from tests.peers import medplum  # noqa: F401  (the session fixture)

ISSUER = "https://peer-ehr.test.example/cds"
SYSTEM = "urn:handoff:referral"


class Reader:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str) -> dict:
        response = requests.get(f"{self.base}/{path}", timeout=15)
        response.raise_for_status()
        return response.json()

    def count(self, rtype: str, key: str) -> int:
        bundle = self.get(f"{rtype}?identifier={SYSTEM}|{key}")
        return len(bundle.get("entry", []))


def test_accept_on_the_card_is_one_referral_at_medplum(tmp_path, medplum):  # noqa: F811
    launch_dir = write_registration(tmp_path / "launch", medplum.origin, client_id="handoff-test")
    key = new_key("peer-ehr-1")
    trust(launch_dir, key, ISSUER, name="peer-ehr")
    port = reserve_port()
    database_url = f"sqlite:///{tmp_path / 'handoff.sqlite'}"
    app = start_app(tmp_path / "app", port, launch_dir, DATABASE_URL=database_url)
    try:
        client = CdsClient(app.url, ISSUER, key, medplum.base_url)
        reader = Reader(medplum.base_url)
        patient, encounter = "P01-pt", "P01-enc"
        definition = next(s for s in client.discovery().services if s.id == PATIENT_VIEW)
        prefetch = {
            k: reader.get(t.replace("{{context.patientId}}", patient))
            for k, t in (definition.prefetch or {}).items()
        }
        status, answer = client.call(client.request(patient, encounter, prefetch))
        assert status == 200, answer
        (card,) = answer["cards"]
        for suggestion in card["suggestions"]:  # the EHR places the draft orders
            for action in suggestion.get("actions", []):
                resource = action["resource"]
                placed = requests.post(
                    f"{medplum.base_url}/{resource['resourceType']}", json=resource, timeout=15
                )
                assert placed.status_code in (200, 201), placed.text
        response = client.feedback(PATIENT_VIEW, [accepted(card)])
        assert response.status_code == 200, response.text
        assert client.feedback(PATIENT_VIEW, [accepted(card)]).status_code == 200
        db = Database(database_url)
        row = outbox.for_visit(db, referral_key(medplum.base_url, encounter, patient, "visit"))
        assert row is not None
        # Handoff's first attempt (beside the feedback) finds no credentials for this EHR (no
        # backend access, no launch): the referral waits, queued. Then the worker's attempt.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = outbox.get(db, row.id)
            if waiting is not None and waiting.attempts >= 1 and waiting.lease_until is None:
                break
            time.sleep(0.2)
        assert waiting is not None and waiting.status == "queued"
        peer = FhirClient(medplum.base_url, "no-auth-on-this-server")
        done = outbox.deliver(db, row.id, lambda r, force_refresh=False: peer)
        assert done.status == "written", done.last_error
        ids = {
            k: referral_key(medplum.base_url, encounter, patient, k)
            for k in ("prc-consult", "prc-consult-task", "naloxone-kit-draft")
        }
        assert reader.count("ServiceRequest", ids["prc-consult"]) == 1
        assert reader.count("Task", ids["prc-consult-task"]) == 1
        assert reader.count("MedicationRequest", ids["naloxone-kit-draft"]) == 1
        # a retried delivery creates nothing new
        outbox.deliver(db, row.id, lambda r, force_refresh=False: peer)
        assert reader.count("ServiceRequest", ids["prc-consult"]) == 1
    finally:
        app.stop()
