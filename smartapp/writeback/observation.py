"""A score recorded by a decision aid (the COWS calculator, smartapp.aids) as a FHIR R4
Observation, and its write to the EHR. Additive to the referral's writes: the shape is pure
(security labels as every resource Handoff writes), and the write is the FHIR client's
conditional create (only smartapp/writeback writes to the EHR)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from smartapp.writeback.shapes import iso, security_labels

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class ScoreObservation:
    """What an aid's total needs to become an Observation of this visit."""

    identifier: dict[str, str]  # Handoff's identifier (system, value): stable per submission
    code: dict[str, str]  # the site's code for the score (the pack's `cows` code)
    text: str  # the code's words
    value: int
    patient_id: str
    encounter_id: str | None
    performer_ref: str | None
    performer_name: str | None
    effective: datetime
    note: str
    opioid: bool = True
    part2: bool = False


def score_observation(score: ScoreObservation) -> dict[str, Any]:
    """The Observation: status final, effective and issued now, this encounter, the physician
    as performer, a unitless score, the item answers as a note."""
    performer: dict[str, str] = {}
    if score.performer_ref:
        performer["reference"] = score.performer_ref
    if score.performer_name:
        performer["display"] = score.performer_name
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": security_labels(score.opioid, score.part2)},
        "identifier": [score.identifier],
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey"}]}],
        "code": {"coding": [dict(score.code)], "text": score.text},
        "subject": {"reference": f"Patient/{score.patient_id}"},
        "effectiveDateTime": iso(score.effective),
        "issued": iso(score.effective),
        "valueQuantity": {
            "value": score.value,
            "system": UCUM,
            "code": "{score}",
        },
        "note": [{"text": score.note}],
    }
    if score.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{score.encounter_id}"}
    if performer:
        resource["performer"] = [performer]
    return resource


def write_observation(client: Any, resource: dict[str, Any], conditional: bool) -> dict[str, str]:
    """Create the Observation at the EHR: conditionally on Handoff's identifier where the
    EHR honours If-None-Exist (a repeated submission creates nothing twice). Returns the
    FHIR client's {"id", "status"}; raises its FhirError."""
    ident = resource["identifier"][0]
    query = f"identifier={ident['system']}|{ident['value']}" if conditional else None
    return client.create(resource, if_none_exist=query)
