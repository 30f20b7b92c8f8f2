"""What Handoff writes to the chart, built as data (shared spec writeback.md).

Pure functions: a signed decision in, a FHIR transaction Bundle out. No HTTP here: only the
outbox's writer sends it. Identifiers are stable per (EHR, encounter, suggestion), so a retry
or a double click can never create a second referral.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from smartapp.profiles import PROFILES, WriteProfile

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
NOTE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
PROVENANCE_ROLE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
REFERRAL_NAMESPACE = uuid.UUID("6f1c1b2a-6a55-4d53-9a43-8f1f3f7d1e01")

CONSULT_MODES = {
    "in-person": "in person",
    "telehealth": "by telehealth",
    "warm-line": "by the warm line (phone)",
}


@dataclass(frozen=True)
class ItemDecision:
    """The physician's word on one suggestion."""

    kind: str
    accepted: bool
    decline_reason: str | None = None  # a decline reason's label
    decline_text: str | None = None  # free text for "other"


@dataclass(frozen=True)
class ShownSuggestion:
    """A suggestion as the physician saw it, with its evidence described in words."""

    kind: str
    title: str
    reason: str
    variant: str | None
    cautions: tuple[str, ...]
    evidence: tuple[str, ...]
    evidence_words: tuple[str, ...]
    rule: str


@dataclass(frozen=True)
class WriteSettings:
    identifier_system: str
    service_request_code: dict
    note_type: dict
    doc_status: str
    coach_team: dict
    part2_program: bool
    draft_medications: bool = False
    medication_codes: dict = field(default_factory=dict)
    coach_pool: dict | None = None


@dataclass(frozen=True)
class SignedReferral:
    """Everything needed to write: who, whom, when, what was shown and decided."""

    iss: str
    patient_id: str
    encounter_id: str | None
    encounter_start: str | None
    user_ref: str | None
    user_name: str | None
    signed_at: datetime
    pack_id: str
    pack_version: str
    pack_hash: str
    shown: tuple[ShownSuggestion, ...]
    decisions: tuple[ItemDecision, ...]
    consult_mode: str = "in-person"
    program: str | None = None
    opioid: bool = False
    extra: dict = field(default_factory=dict)


def referral_key(iss: str, encounter_id: str | None, patient_id: str, kind: str) -> str:
    """Stable id for one suggestion in one visit at one EHR."""
    visit = encounter_id or f"patient:{patient_id}"
    return str(uuid.uuid5(REFERRAL_NAMESPACE, f"{iss}|{visit}|{kind}"))


def security_labels(opioid: bool, part2: bool) -> list[dict]:
    """Confidentiality R and SUD sensitivity; Part 2 labels where the site's program is one."""
    labels = [
        {"system": CONFIDENTIALITY, "code": "R", "display": "restricted"},
        {"system": ACT_CODE, "code": "OPIOIDUD" if opioid else "SUD"},
    ]
    if part2:
        labels += [
            {"system": ACT_CODE, "code": "42CFRPart2"},
            {"system": ACT_CODE, "code": "NORDSCLCD"},
        ]
    return labels


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def decision_for(referral: SignedReferral, kind: str) -> ItemDecision | None:
    return next((d for d in referral.decisions if d.kind == kind), None)


@dataclass(frozen=True)
class Planned:
    """One resource Handoff will write, with its stable identifier and conditional query."""

    key: str
    resource: dict
    conditional: str

    @property
    def type(self) -> str:
        return self.resource["resourceType"]

    @property
    def full_url(self) -> str:
        return f"urn:uuid:{self.key}"


def plan_resources(
    referral: SignedReferral, settings: WriteSettings, profile: WriteProfile | None = None
) -> list[Planned]:
    """Every resource of the referral, in write order; references between them are
    `urn:uuid:<key>` until they are written. The profile only changes shapes (docStatus,
    the handoff channel), never which facts are recorded."""
    profile = profile or PROFILES["fhir-rest"]
    meta = {"security": security_labels(referral.opioid, settings.part2_program)}
    patient = {"reference": f"Patient/{referral.patient_id}"}
    encounter = (
        {"reference": f"Encounter/{referral.encounter_id}"} if referral.encounter_id else None
    )
    # The signing physician, by reference and by name (the name from their fhirUser).
    requester = (
        {"reference": referral.user_ref}
        | ({"display": referral.user_name} if referral.user_name else {})
        if referral.user_ref
        else None
    )
    signed = _iso(referral.signed_at)
    planned: list[Planned] = []

    def identifier(kind: str) -> dict:
        key = referral_key(referral.iss, referral.encounter_id, referral.patient_id, kind)
        return {"system": settings.identifier_system, "value": key}

    def add(resource: dict, ident: dict, by_tag: bool = False) -> str:
        field_name = "_tag" if by_tag else "identifier"
        item = Planned(ident["value"], resource, f"{field_name}={ident['system']}|{ident['value']}")
        planned.append(item)
        return item.full_url

    def common(resource: dict) -> dict:
        if encounter:
            resource["encounter"] = encounter
        if requester:
            resource["requester"] = requester
        return resource

    mode_words = CONSULT_MODES.get(referral.consult_mode, "")
    prc = decision_for(referral, "prc-consult")
    prc_shown = next((s for s in referral.shown if s.kind == "prc-consult"), None)
    service_request_url = None
    if prc is not None and prc.accepted and prc_shown is not None:
        ident = identifier("prc-consult")
        reasons = [{"reference": r} for r in prc_shown.evidence if r.startswith("Condition/")]
        service_request = common(
            {
                "resourceType": "ServiceRequest",
                "meta": meta,
                "identifier": [ident],
                "status": "active",
                "intent": "order",
                "category": [
                    {
                        "coding": [
                            {
                                "system": SNOMED,
                                "code": "410606002",
                                "display": "Social service procedure",
                            }
                        ]
                    }
                ],
                "priority": "urgent",
                "code": {"coding": [settings.service_request_code]},
                "subject": patient,
                "authoredOn": signed,
                "performer": [settings.coach_team],
                "note": [
                    {
                        "text": f"Peer recovery coach consult offered {mode_words}; "
                        "the patient did not decline (opt-out)."
                        + (f" Community program: {referral.program}." if referral.program else "")
                    }
                ],
            }
        )
        if reasons:
            service_request["reasonReference"] = reasons
        service_request_url = add(service_request, ident)

        task_ident = identifier("prc-consult-task")
        add(
            common(
                {
                    "resourceType": "Task",
                    "meta": meta,
                    "identifier": [task_ident],
                    "status": "requested",
                    "intent": "order",
                    "priority": "urgent",
                    "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
                    "basedOn": [{"reference": service_request_url}],
                    "focus": {"reference": service_request_url},
                    "for": patient,
                    "authoredOn": signed,
                    "owner": settings.coach_team,
                    "description": f"Warm handoff: peer recovery coach consult {mode_words}"
                    + (f"; program: {referral.program}" if referral.program else ""),
                }
            ),
            task_ident,
        )

        if profile.handoff_channel == "communication" and settings.coach_pool:
            comm_ident = identifier("prc-consult-communication")
            communication = {
                "resourceType": "Communication",
                "meta": meta,
                "identifier": [comm_ident],
                "status": "completed",
                "priority": "urgent",
                "subject": patient,
                "recipient": [settings.coach_pool],
                "sent": signed,
                "basedOn": [{"reference": service_request_url}],
                "payload": [
                    {
                        "contentString": "Warm handoff requested: peer recovery coach "
                        f"consult {mode_words}"
                        + (f"; program: {referral.program}" if referral.program else "")
                        + ". Please see the patient in the ED."
                    }
                ],
            }
            if encounter:
                communication["encounter"] = encounter
            if requester:
                communication["sender"] = requester
            add(communication, comm_ident)

    if settings.draft_medications:
        for kind in ("moud-buprenorphine", "naloxone-kit"):
            decision = decision_for(referral, kind)
            code = settings.medication_codes.get(kind)
            if decision is None or not decision.accepted or not code:
                continue
            ident = identifier(f"{kind}-draft")
            add(
                common(
                    {
                        "resourceType": "MedicationRequest",
                        "meta": meta,
                        "identifier": [ident],
                        "status": "draft",
                        "intent": "proposal",
                        "medicationCodeableConcept": {"coding": [code]},
                        "subject": patient,
                        "authoredOn": signed,
                        "note": [
                            {
                                "text": "Proposed by Handoff on the physician's decision; dose and "
                                "instructions to be completed and signed in the EHR."
                            }
                        ],
                    }
                ),
                ident,
            )

    note_ident = identifier("linkage-note")
    text = note_text(referral)
    document = {
        "resourceType": "DocumentReference",
        "meta": meta,
        "identifier": [note_ident],
        "status": "current",
        "docStatus": profile.forced_doc_status or settings.doc_status,
        "type": {"coding": [settings.note_type]},
        "category": [
            {
                "coding": [
                    {"system": NOTE_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}
                ]
            }
        ],
        "subject": patient,
        "date": signed,
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                    "title": "Handoff: substance use linkage note",
                    "creation": signed,
                }
            }
        ],
    }
    if requester:
        document["author"] = [requester]
    context: dict = {}
    if encounter:
        context["encounter"] = [encounter]
    context["period"] = {"start": referral.encounter_start or signed, "end": signed}
    if service_request_url:
        context["related"] = [{"reference": service_request_url}]
    document["context"] = context
    add(document, note_ident)

    provenance_ident = identifier("provenance")
    add(
        {
            "resourceType": "Provenance",
            # A tag is a Coding: Handoff's identifier as its code, so `_tag` finds it on a retry.
            "meta": meta
            | {"tag": [{"system": provenance_ident["system"], "code": provenance_ident["value"]}]},
            "target": [{"reference": item.full_url} for item in planned],
            "recorded": signed,
            "agent": [
                {
                    "type": {"coding": [{"system": PROVENANCE_ROLE, "code": "author"}]},
                    "who": requester or {"display": referral.user_name or "unknown user"},
                },
                {
                    "type": {"coding": [{"system": PROVENANCE_ROLE, "code": "assembler"}]},
                    "who": {"display": "Handoff"},
                },
            ],
            "entity": [
                {
                    "role": "source",
                    "what": {
                        "identifier": {
                            "system": "urn:handoff:rule-pack",
                            "value": f"{referral.pack_id}|{referral.pack_version}",
                        },
                        "display": f"Rule pack {referral.pack_id} {referral.pack_version} "
                        f"(sha256 {referral.pack_hash[:12]})",
                    },
                }
            ],
        },
        provenance_ident,
        by_tag=True,
    )
    return planned


def build_transaction(referral: SignedReferral, settings: WriteSettings) -> dict:
    """The fhir-rest write: every planned resource in one transaction Bundle, each a
    conditional create keyed on Handoff's identifier, so a retry creates nothing twice."""
    return transaction_bundle(plan_resources(referral, settings))


def transaction_bundle(planned: list[Planned]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": item.full_url,
                "resource": item.resource,
                "request": {"method": "POST", "url": item.type, "ifNoneExist": item.conditional},
            }
            for item in planned
        ],
    }


def transaction_bundle_from_operations(operations: list[dict]) -> dict:
    """The transaction for stored plan operations (the outbox keeps operations, not Planned)."""
    return transaction_bundle(
        [Planned(op["key"], op["resource"], op["conditional"]) for op in operations]
    )


def build_plan(referral: SignedReferral, settings: WriteSettings, profile: WriteProfile) -> dict:
    """What the outbox will do, as stored data: each resource, whether it goes to the EHR
    (and how) or stays in Handoff, and its status."""
    planned = plan_resources(referral, settings, profile)
    return {
        "profile": profile.name,
        "transaction": profile.transaction,
        "conditional_create": profile.conditional_create,
        "order_route": profile.order_route,
        "operations": [
            {
                "key": item.key,
                "type": item.type,
                "mode": "rest" if item.type in profile.rest_types else "local",
                "conditional": item.conditional,
                "resource": item.resource,
                "status": "pending" if item.type in profile.rest_types else "kept",
                "id": None,
            }
            for item in planned
        ],
    }


def note_text(referral: SignedReferral) -> str:
    """The linkage note, written for a human reader."""
    lines = [
        "Handoff: emergency department substance use linkage note",
        f"Signed {referral.signed_at.strftime('%Y-%m-%d %H:%M UTC')}"
        + (f" by {referral.user_name}" if referral.user_name else ""),
        "",
    ]
    if not referral.shown:
        lines.append("No suggestion was made for this visit.")
    for shown in referral.shown:
        decision = decision_for(referral, shown.kind)
        lines.append(f"* {shown.title}")
        lines.append(f"  Why: {shown.reason}")
        if shown.variant:
            lines.append(f"  Variant: {shown.variant.replace('-', ' ')}")
        if shown.cautions:
            lines.append(f"  Cautions: {', '.join(shown.cautions)}")
        if shown.evidence_words:
            lines.append("  Evidence: " + "; ".join(shown.evidence_words))
        if decision is None or decision.accepted:
            lines.append("  Decision: accepted (the patient did not decline)")
        else:
            reason = decision.decline_reason or "no reason given"
            if decision.decline_text:
                reason += f" ({decision.decline_text})"
            lines.append(f"  Decision: declined: {reason}")
        if shown.kind == "prc-consult" and (decision is None or decision.accepted):
            lines.append(
                f"  Coach referral: peer recovery coach consult "
                f"{CONSULT_MODES.get(referral.consult_mode, referral.consult_mode)}; "
                "warm handoff to the coach team."
            )
            lines.append(f"  Community program for the handoff: {referral.program or 'not chosen'}")
        lines.append("")
    lines.append(
        f"Suggestions by rule pack {referral.pack_id} {referral.pack_version}. "
        "Suggestions are advice; the physician decided."
    )
    lines.append(
        "This note holds substance use disorder information protected by federal "
        "confidentiality rules; do not redisclose without consent."
    )
    return "\n".join(lines) + "\n"
