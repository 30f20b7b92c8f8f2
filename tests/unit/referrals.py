"""A signed referral and a site's write settings for the server-free write-back tests."""

from __future__ import annotations

from datetime import UTC, datetime

from smartapp.writeback.resources import (
    ItemDecision,
    ShownSuggestion,
    SignedReferral,
    WriteSettings,
)

SYSTEM = "urn:handoff:referral"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SETTINGS = WriteSettings(
    identifier_system=SYSTEM,
    service_request_code={"system": "http://snomed.info/sct", "code": "461481000124109"},
    note_type={"system": "http://loinc.org", "code": "11488-4"},
    doc_status="preliminary",
    coach_team={"display": "Coach team"},
    part2_program=False,
    draft_medications=True,
    medication_codes={
        "naloxone-kit": {"system": RXNORM, "code": "7242"},
        "moud-buprenorphine": {"system": RXNORM, "code": "1010600"},
    },
    coach_pool={"reference": "Group/coach-pool", "display": "Coach pool"},
)


def shown(kind: str, evidence: tuple[str, ...] = ()) -> ShownSuggestion:
    return ShownSuggestion(kind, kind.title(), "why", None, (), evidence, (), kind)


SHOWN = (
    shown("prc-consult", ("Condition/c1", "Observation/o1")),
    shown("moud-buprenorphine"),
    shown("naloxone-kit"),
)
ALL_ACCEPTED = tuple(ItemDecision(s.kind, True) for s in SHOWN)


def referral(decisions=ALL_ACCEPTED, **overrides) -> SignedReferral:
    values = dict(
        iss="http://ehr.test/fhir",
        patient_id="p1",
        encounter_id="e1",
        encounter_start="2026-11-20T10:00:00Z",
        user_ref="Practitioner/doc",
        user_name="Avery Demo, MD",
        signed_at=datetime(2026, 11, 20, 15, 0, tzinfo=UTC),
        pack_id="default",
        pack_version="1",
        pack_hash="00" * 32,
        shown=SHOWN,
        decisions=tuple(decisions),
        opioid=True,
        program="Bridge clinic",
    )
    return SignedReferral(**(values | overrides))
