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


def build_transaction(referral: SignedReferral, settings: WriteSettings) -> dict:
    """The transaction Bundle: ServiceRequest (if the coach consult stands), DocumentReference,
    Task and Provenance; conditional creates keyed on Handoff's identifiers."""
    meta = {"security": security_labels(referral.opioid, settings.part2_program)}
    patient = {"reference": f"Patient/{referral.patient_id}"}
    encounter = (
        {"reference": f"Encounter/{referral.encounter_id}"} if referral.encounter_id else None
    )
    requester = {"reference": referral.user_ref} if referral.user_ref else None
    signed = _iso(referral.signed_at)
    entries: list[dict] = []

    def identifier(kind: str) -> dict:
        key = referral_key(referral.iss, referral.encounter_id, referral.patient_id, kind)
        return {"system": settings.identifier_system, "value": key}

    def add(resource: dict, ident: dict) -> str:
        full_url = f"urn:uuid:{ident['value']}"
        entries.append(
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
                },
            }
        )
        return full_url

    targets: list[str] = []
    prc = decision_for(referral, "prc-consult")
    prc_shown = next((s for s in referral.shown if s.kind == "prc-consult"), None)
    service_request_url = None
    if prc is not None and prc.accepted and prc_shown is not None:
        ident = identifier("prc-consult")
        service_request = {
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
            "reasonReference": [
                {"reference": ref} for ref in prc_shown.evidence if ref.startswith("Condition/")
            ],
            "performer": [settings.coach_team],
            "note": [
                {
                    "text": "Peer recovery coach consult offered "
                    f"{CONSULT_MODES.get(referral.consult_mode, '')}; "
                    "the patient did not decline (opt-out)."
                }
            ],
        }
        if encounter:
            service_request["encounter"] = encounter
        if requester:
            service_request["requester"] = requester
        if not service_request["reasonReference"]:
            del service_request["reasonReference"]
        service_request_url = add(service_request, ident)
        targets.append(service_request_url)

        task_ident = identifier("prc-consult-task")
        task = {
            "resourceType": "Task",
            "meta": meta,
            "identifier": [task_ident],
            "status": "requested",
            "intent": "order",
            "priority": "urgent",
            "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
            "focus": {"reference": service_request_url},
            "for": patient,
            "authoredOn": signed,
            "owner": settings.coach_team,
            "description": "Warm handoff: peer recovery coach consult "
            + CONSULT_MODES.get(referral.consult_mode, ""),
        }
        if encounter:
            task["encounter"] = encounter
        if requester:
            task["requester"] = requester
        targets.append(add(task, task_ident))

    note_ident = identifier("linkage-note")
    text = note_text(referral)
    document = {
        "resourceType": "DocumentReference",
        "meta": meta,
        "identifier": [note_ident],
        "status": "current",
        "docStatus": settings.doc_status,
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
    targets.append(add(document, note_ident))

    provenance_ident = identifier("provenance")
    provenance = {
        "resourceType": "Provenance",
        "meta": meta | {"tag": [provenance_ident]},
        "target": [{"reference": url} for url in targets],
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
    }
    entries.append(
        {
            "fullUrl": f"urn:uuid:{provenance_ident['value']}",
            "resource": provenance,
            "request": {
                "method": "POST",
                "url": "Provenance",
                "ifNoneExist": f"_tag={provenance_ident['system']}|{provenance_ident['value']}",
            },
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


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
