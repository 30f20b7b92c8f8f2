"""The write-back shapes of shared/spec/writeback.md, built as data (no server involved)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from smartapp.writeback.resources import (
    ItemDecision,
    ShownSuggestion,
    SignedReferral,
    WriteSettings,
    build_transaction,
    referral_key,
)

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
    part2_program=False,
)

PRC = ShownSuggestion(
    kind="prc-consult",
    title="Peer recovery coach consult",
    reason="Opioid use disorder",
    variant=None,
    cautions=(),
    evidence=("Condition/c1", "Observation/o1"),
    evidence_words=("Diagnosis: Opioid dependence (F11.20)",),
    rule="prc-consult",
)
BUP = ShownSuggestion(
    kind="moud-buprenorphine",
    title="Buprenorphine",
    reason="OUD, COWS 11",
    variant="ed-induction",
    cautions=("pregnancy",),
    evidence=("Condition/c1",),
    evidence_words=("Diagnosis: Opioid dependence (F11.20)",),
    rule="moud-buprenorphine",
)


def signed(decisions, shown=(PRC, BUP), **overrides) -> SignedReferral:
    values = dict(
        iss="http://ehr.test/fhir",
        patient_id="p1",
        encounter_id="e1",
        encounter_start="2026-11-20T10:00:00Z",
        user_ref="Practitioner/doc",
        user_name=None,
        signed_at=datetime(2026, 11, 20, 15, 0, tzinfo=UTC),
        pack_id="handoff-default",
        pack_version="1.0.0",
        pack_hash="ab" * 32,
        shown=shown,
        decisions=tuple(decisions),
        consult_mode="telehealth",
        program="Bridge clinic",
        opioid=True,
    )
    values.update(overrides)
    return SignedReferral(**values)


def resources(bundle: dict) -> dict[str, dict]:
    return {e["resource"]["resourceType"]: e for e in bundle["entry"]}


def test_accepted_consult_writes_service_request_note_task_and_provenance():
    bundle = build_transaction(
        signed([ItemDecision("prc-consult", True), ItemDecision("moud-buprenorphine", True)]),
        SETTINGS,
    )
    assert bundle["type"] == "transaction"
    entries = resources(bundle)
    assert set(entries) == {"ServiceRequest", "Task", "DocumentReference", "Provenance"}

    sr = entries["ServiceRequest"]["resource"]
    assert sr["status"] == "active" and sr["intent"] == "order" and sr["priority"] == "urgent"
    assert sr["code"]["coding"][0]["code"] == "461481000124109"
    assert sr["category"][0]["coding"][0]["code"] == "410606002"
    assert sr["subject"] == {"reference": "Patient/p1"}
    assert sr["encounter"] == {"reference": "Encounter/e1"}
    assert sr["requester"] == {"reference": "Practitioner/doc"}
    assert sr["reasonReference"] == [{"reference": "Condition/c1"}]  # Conditions only
    assert "did not decline" in sr["note"][0]["text"]
    ident = sr["identifier"][0]
    assert entries["ServiceRequest"]["request"]["ifNoneExist"] == (
        f"identifier={ident['system']}|{ident['value']}"
    )

    doc = entries["DocumentReference"]["resource"]
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert doc["type"]["coding"][0]["code"] == "11488-4"
    assert doc["category"][0]["coding"][0]["code"] == "clinical-note"
    assert doc["context"]["period"] == {
        "start": "2026-11-20T10:00:00Z",
        "end": "2026-11-20T15:00:00Z",
    }
    assert doc["context"]["related"] == [{"reference": entries["ServiceRequest"]["fullUrl"]}]
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    text = base64.b64decode(attachment["data"]).decode()
    assert "Peer recovery coach consult" in text and "telehealth" in text
    assert "Bridge clinic" in text and "ed induction" in text and "pregnancy" in text

    task = entries["Task"]["resource"]
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/CodeSystem/task-code",
        "code": "fulfill",
    }
    assert task["focus"] == {"reference": entries["ServiceRequest"]["fullUrl"]}
    assert task["for"] == {"reference": "Patient/p1"}

    prov = entries["Provenance"]["resource"]
    assert {t["reference"] for t in prov["target"]} == {
        entries[t]["fullUrl"] for t in ("ServiceRequest", "Task", "DocumentReference")
    }
    roles = [a["type"]["coding"][0]["code"] for a in prov["agent"]]
    assert roles == ["author", "assembler"]
    assert prov["entity"][0]["what"]["identifier"]["value"] == "handoff-default|1.0.0"


def test_every_resource_carries_security_labels():
    bundle = build_transaction(
        signed([ItemDecision("prc-consult", True), ItemDecision("moud-buprenorphine", True)]),
        SETTINGS,
    )
    for entry in bundle["entry"]:
        codes = {s["code"] for s in entry["resource"]["meta"]["security"]}
        assert codes == {"R", "OPIOIDUD"}


def test_part2_program_adds_part2_and_no_redisclosure_labels():
    settings = WriteSettings(**{**SETTINGS.__dict__, "part2_program": True})
    bundle = build_transaction(
        signed([ItemDecision("prc-consult", True)], shown=(PRC,), opioid=False), settings
    )
    codes = {s["code"] for s in bundle["entry"][0]["resource"]["meta"]["security"]}
    assert codes == {"R", "SUD", "42CFRPart2", "NORDSCLCD"}


def test_declined_consult_writes_only_the_note_with_the_reason():
    bundle = build_transaction(
        signed(
            [
                ItemDecision("prc-consult", False, "Patient declined", None),
                ItemDecision("moud-buprenorphine", False, "Other (free text)", "wants to think"),
            ]
        ),
        SETTINGS,
    )
    entries = resources(bundle)
    assert set(entries) == {"DocumentReference", "Provenance"}
    text = base64.b64decode(
        entries["DocumentReference"]["resource"]["content"][0]["attachment"]["data"]
    ).decode()
    assert "declined: Patient declined" in text
    assert "declined: Other (free text) (wants to think)" in text


def test_identifiers_are_stable_per_visit_and_differ_between_visits():
    one = build_transaction(signed([ItemDecision("prc-consult", True)]), SETTINGS)
    two = build_transaction(signed([ItemDecision("prc-consult", True)]), SETTINGS)
    other = build_transaction(
        signed([ItemDecision("prc-consult", True)], encounter_id="e2"), SETTINGS
    )
    ids = [[e["resource"].get("identifier") for e in b["entry"]] for b in (one, two, other)]
    assert ids[0] == ids[1]
    assert ids[0][0] != ids[2][0]
    assert referral_key("a", "e1", "p", "k") != referral_key("b", "e1", "p", "k")
