"""The FHIR shape of each resource Handoff writes (shared spec writeback.md), one builder per
resource. Pure: a signed visit in, a resource with its stable identifier out. Every resource
carries the visit's security labels (restricted, SUD or OUD, and 42 CFR Part 2 where the
site's program is one); references between them are `urn:uuid:<key>` until they are written.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from smartapp.engine import kinds
from smartapp.engine.labels import OPIOIDUD, SUD
from smartapp.writeback.note import note_text
from smartapp.writeback.plan import PlannedResource
from smartapp.writeback.referral import (
    CONSULT_MODES,
    ShownSuggestion,
    SignedReferral,
    WriteSettings,
    referral_key,
)

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
NOTE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
PROVENANCE_ROLE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

Resource = dict[str, Any]


def security_labels(opioid: bool, part2: bool) -> list[dict]:
    """Confidentiality R and SUD sensitivity; Part 2 labels where the site's program is one."""
    labels = [
        {"system": CONFIDENTIALITY, "code": "R", "display": "restricted"},
        {"system": ACT_CODE, "code": OPIOIDUD if opioid else SUD},
    ]
    if part2:
        labels += [
            {"system": ACT_CODE, "code": "42CFRPart2"},
            {"system": ACT_CODE, "code": "NORDSCLCD"},
        ]
    return labels


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Visit:
    """What every resource of one signed referral shares: labels, patient, encounter, the
    signing physician (by reference and by name, the name from their fhirUser), the time."""

    referral: SignedReferral
    settings: WriteSettings
    meta: Resource
    patient: Resource
    encounter: Resource | None
    requester: Resource | None
    signed: str

    @classmethod
    def of(cls, referral: SignedReferral, settings: WriteSettings) -> Visit:
        requester = None
        if referral.user_ref:
            requester = {"reference": referral.user_ref} | (
                {"display": referral.user_name} if referral.user_name else {}
            )
        return cls(
            referral=referral,
            settings=settings,
            meta={"security": security_labels(referral.opioid, settings.part2_program)},
            patient={"reference": f"Patient/{referral.patient_id}"},
            encounter=(
                {"reference": f"Encounter/{referral.encounter_id}"}
                if referral.encounter_id
                else None
            ),
            requester=requester,
            signed=iso(referral.signed_at),
        )

    @property
    def mode_words(self) -> str:
        return CONSULT_MODES.get(self.referral.consult_mode, "")

    def program_words(self, prefix: str) -> str:
        return f"{prefix}{self.referral.program}" if self.referral.program else ""

    def identifier(self, kind: str) -> Resource:
        """Handoff's identifier for one resource of this visit (stable across retries)."""
        r = self.referral
        # A referral placed by an amendment after Sign (smartapp.aftercare.amend) has its own
        # identifiers (`extra["amendment"]`: its number), never the revoked referral's.
        amendment = r.extra.get("amendment")
        named = f"{kind}|amendment-{amendment}" if amendment else kind
        key = referral_key(r.iss, r.encounter_id, r.patient_id, named)
        return {"system": self.settings.identifier_system, "value": key}

    def with_visit(self, resource: Resource) -> Resource:
        """Add the encounter and the requester where the visit has them."""
        if self.encounter:
            resource["encounter"] = self.encounter
        if self.requester:
            resource["requester"] = self.requester
        return resource


def planned(resource: Resource, ident: Resource, by_tag: bool = False) -> PlannedResource:
    """The resource with the query that finds it at the EHR (by identifier, or by `_tag`)."""
    field_name = "_tag" if by_tag else "identifier"
    conditional = f"{field_name}={ident['system']}|{ident['value']}"
    return PlannedResource(ident["value"], resource, conditional)


def service_request(visit: Visit, shown: ShownSuggestion) -> PlannedResource:
    """The coach consult order: urgent, for the coach team, with its Conditions as reasons."""
    ident = visit.identifier(kinds.PRC_CONSULT)
    settings = visit.settings
    category = {"system": SNOMED, "code": "410606002", "display": "Social service procedure"}
    program = visit.referral.program
    note = (
        f"Peer recovery coach consult offered {visit.mode_words}; "
        "the patient did not decline (opt-out)."
        + (f" Community program: {program}." if program else "")
    )
    resource = visit.with_visit(
        {
            "resourceType": "ServiceRequest",
            "meta": visit.meta,
            "identifier": [ident],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [category]}],
            "priority": "urgent",
            "code": {"coding": [settings.service_request_code]},
            "subject": visit.patient,
            "authoredOn": visit.signed,
            "performer": [settings.coach_team],
            "note": [{"text": note}],
        }
    )
    reasons = [{"reference": r} for r in shown.evidence if r.startswith("Condition/")]
    if reasons:
        resource["reasonReference"] = reasons
    return planned(resource, ident)


def coach_task(visit: Visit, service_request_url: str) -> PlannedResource:
    """The warm handoff as a Task for the coach team, based on the consult order."""
    ident = visit.identifier("prc-consult-task")
    resource = visit.with_visit(
        {
            "resourceType": "Task",
            "meta": visit.meta,
            "identifier": [ident],
            "status": "requested",
            "intent": "order",
            "priority": "urgent",
            "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
            "basedOn": [{"reference": service_request_url}],
            "focus": {"reference": service_request_url},
            "for": visit.patient,
            "authoredOn": visit.signed,
            "owner": visit.settings.coach_team,
            "description": f"Warm handoff: peer recovery coach consult {visit.mode_words}"
            + visit.program_words("; program: "),
        }
    )
    return planned(resource, ident)


def coach_communication(
    visit: Visit, service_request_url: str, coach_pool: Resource
) -> PlannedResource:
    """The warm handoff as a message to a coach pool (EHRs without a Task create)."""
    ident = visit.identifier("prc-consult-communication")
    text = (
        f"Warm handoff requested: peer recovery coach consult {visit.mode_words}"
        + visit.program_words("; program: ")
        + ". Please see the patient in the ED."
    )
    resource: Resource = {
        "resourceType": "Communication",
        "meta": visit.meta,
        "identifier": [ident],
        "status": "completed",
        "priority": "urgent",
        "subject": visit.patient,
        "recipient": [coach_pool],
        "sent": visit.signed,
        "basedOn": [{"reference": service_request_url}],
        "payload": [{"contentString": text}],
    }
    if visit.encounter:
        resource["encounter"] = visit.encounter
    if visit.requester:
        resource["sender"] = visit.requester
    return planned(resource, ident)


def draft_medication(visit: Visit, kind: str, code: Resource) -> PlannedResource:
    """A draft order (proposal) the physician completes and signs in the EHR."""
    ident = visit.identifier(f"{kind}-draft")
    resource = visit.with_visit(
        {
            "resourceType": "MedicationRequest",
            "meta": visit.meta,
            "identifier": [ident],
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {"coding": [code]},
            "subject": visit.patient,
            "authoredOn": visit.signed,
            "note": [
                {
                    "text": "Proposed by Handoff on the physician's decision; dose and "
                    "instructions to be completed and signed in the EHR."
                }
            ],
        }
    )
    return planned(resource, ident)


def linkage_note(visit: Visit, doc_status: str, service_request_url: str | None) -> PlannedResource:
    """The linkage note as a plain-text DocumentReference over the visit's period."""
    ident = visit.identifier("linkage-note")
    text = note_text(visit.referral)
    category = {"system": NOTE_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}
    attachment = {
        "contentType": "text/plain; charset=utf-8",
        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
        "title": "Handoff: substance use linkage note",
        "creation": visit.signed,
    }
    document: Resource = {
        "resourceType": "DocumentReference",
        "meta": visit.meta,
        "identifier": [ident],
        "status": "current",
        "docStatus": doc_status,
        "type": {"coding": [visit.settings.note_type]},
        "category": [{"coding": [category]}],
        "subject": visit.patient,
        "date": visit.signed,
        "content": [{"attachment": attachment}],
    }
    if visit.requester:
        document["author"] = [visit.requester]
    document["context"] = _note_context(visit, service_request_url)
    return planned(document, ident)


def _note_context(visit: Visit, service_request_url: str | None) -> Resource:
    context: Resource = {}
    if visit.encounter:
        context["encounter"] = [visit.encounter]
    start = visit.referral.encounter_start or visit.signed
    context["period"] = {"start": start, "end": visit.signed}
    if service_request_url:
        context["related"] = [{"reference": service_request_url}]
    return context


def provenance(visit: Visit, targets: list[PlannedResource]) -> PlannedResource:
    """Who wrote what: the physician as author, Handoff as assembler, the rule pack as
    source. Found on a retry by `_tag` (Handoff's identifier as a tag's code)."""
    ident = visit.identifier("provenance")
    referral = visit.referral
    pack = {
        "identifier": {
            "system": "urn:handoff:rule-pack",
            "value": f"{referral.pack_id}|{referral.pack_version}",
        },
        "display": f"Rule pack {referral.pack_id} {referral.pack_version} "
        f"(sha256 {referral.pack_hash[:12]})",
    }
    resource = {
        "resourceType": "Provenance",
        "meta": visit.meta | {"tag": [{"system": ident["system"], "code": ident["value"]}]},
        "target": [{"reference": item.full_url} for item in targets],
        "recorded": visit.signed,
        "agent": [
            _agent("author", visit.requester or {"display": referral.user_name or "unknown user"}),
            _agent("assembler", {"type": "Device", "display": "Handoff"}),
        ],
        "entity": [{"role": "source", "what": pack}],
    }
    return planned(resource, ident, by_tag=True)


def _agent(role: str, who: Resource) -> Resource:
    return {"type": {"coding": [{"system": PROVENANCE_ROLE, "code": role}]}, "who": who}
