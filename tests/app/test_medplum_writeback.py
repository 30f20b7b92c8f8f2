"""The fhir-rest write path against a FHIR server nobody on this team wrote (Medplum's engine,
started by the tests): the outbox delivers a signed referral, a retry creates nothing, and what
is read back matches what Handoff planned, field by field."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import requests

from smartapp.db import Database
from smartapp.fhir.client import FhirClient
from smartapp.writeback import outbox, profiles
from smartapp.writeback.resources import (
    ItemDecision,
    ShownSuggestion,
    SignedReferral,
    WriteSettings,
    build_plan,
    referral_key,
)

SERVER_FIELDS = {"id", "meta"}

SETTINGS = WriteSettings(
    identifier_system="urn:handoff:referral",
    service_request_code={
        "system": "http://snomed.info/sct",
        "code": "461481000124109",
        "display": "Referral to peer support",
    },
    note_type={"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"},
    doc_status="final",
    coach_team={"display": "Peer recovery coach team"},
    part2_program=True,
    draft_medications=True,
    medication_codes={
        "naloxone-kit": {
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "7242",
            "display": "naloxone",
        }
    },
)


def signed_referral(base: str) -> SignedReferral:
    shown = (
        ShownSuggestion(
            kind="prc-consult",
            title="Peer recovery coach consult",
            reason="OUD",
            variant=None,
            cautions=(),
            evidence=("Condition/P01-cond1",),
            evidence_words=("Diagnosis: F11.20",),
            rule="prc-consult",
        ),
        ShownSuggestion(
            kind="naloxone-kit",
            title="Naloxone kit",
            reason="OUD",
            variant=None,
            cautions=(),
            evidence=("Condition/P01-cond1",),
            evidence_words=("Diagnosis: F11.20",),
            rule="naloxone-kit",
        ),
    )
    return SignedReferral(
        iss=base,
        patient_id="P01-pt",
        encounter_id="P01-enc",
        encounter_start="2026-11-20T10:00:00Z",
        user_ref="Practitioner/demo-ed-physician",
        user_name=None,
        signed_at=datetime.now(UTC).replace(microsecond=0),
        pack_id="handoff-default",
        pack_version="1.0.0",
        pack_hash="ab" * 32,
        shown=shown,
        decisions=(ItemDecision("prc-consult", True), ItemDecision("naloxone-kit", True)),
        consult_mode="warm-line",
        program="Example Bridge Clinic ((555) 555-0111)",
        opioid=True,
    )


def strip(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in SERVER_FIELDS}


def expected(planned: dict, ids: dict[str, str]) -> dict:
    """The planned resource with its urn:uuid references rewritten to the server's ids."""
    return strip(outbox._resolve(planned, ids, {}))


def test_fhir_rest_write_path_on_medplum(tmp_path, medplum):
    db = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    db.create_all()
    referral = signed_referral(medplum.base_url)
    plan = build_plan(referral, SETTINGS, profiles.profile("fhir-rest"))
    planned = copy.deepcopy(plan["operations"])
    row, created = outbox.submit(
        db,
        visit_key=referral_key(medplum.base_url, "P01-enc", "P01-pt", "visit"),
        context_id="ctx",
        iss=medplum.base_url,
        patient_id="P01-pt",
        encounter_id="P01-enc",
        user_ref=referral.user_ref,
        decision={"decisions": []},
        plan=plan,
    )
    assert created

    client = FhirClient(medplum.base_url, "no-auth-on-this-server")
    done = outbox.deliver(db, row.id, lambda r, force_refresh=False: client)
    assert done.status == "written", done.last_error
    ids = {f"urn:uuid:{op['key']}": f"{op['type']}/{op['id']}" for op in done.plan["operations"]}
    assert sorted(op["type"] for op in done.plan["operations"]) == [
        "DocumentReference",
        "MedicationRequest",
        "Provenance",
        "ServiceRequest",
        "Task",
    ]

    # Read back over HTTP: every field Handoff wrote is there, unchanged.
    for op in planned:
        ref = ids[f"urn:uuid:{op['key']}"]
        stored = requests.get(medplum.url(ref), timeout=10).json()
        assert stored["resourceType"] == op["type"]
        assert strip(stored) == expected(op["resource"], ids), ref
        labels = {s["code"] for s in stored["meta"]["security"]}
        assert labels == {"R", "OPIOIDUD", "42CFRPart2", "NORDSCLCD"}

    # A retry (an answer lost, the outbox tries again) creates nothing new at Medplum.
    with db.session() as session:
        from smartapp.db import Referral

        again = session.get(Referral, row.id)
        again.status = "queued"
        again.plan = {
            **again.plan,
            "operations": [op | {"status": "pending"} for op in again.plan["operations"]],
        }
    retried = outbox.deliver(db, row.id, lambda r, force_refresh=False: client)
    assert retried.status == "written"
    assert {op["id"] for op in retried.plan["operations"]} == {
        ref.split("/")[1] for ref in ids.values()
    }
    found = requests.get(
        medplum.url("ServiceRequest"),
        params={"identifier": planned[0]["conditional"].split("=", 1)[1]},
        timeout=10,
    ).json()
    assert len(found.get("entry", [])) == 1
