"""What Handoff writes to the chart, built as data (shared spec writeback.md).

Pure functions: a signed decision in, a typed write plan (or a FHIR transaction Bundle) out.
No HTTP here: only the outbox sends writes. Which resources a referral needs is decided here,
per profile; each resource's shape is in `shapes`, the plan's type in `plan`.
"""

from __future__ import annotations

from typing import Any

from smartapp.engine import kinds
from smartapp.writeback.note import note_text
from smartapp.writeback.plan import Operation, PlannedResource, WritePlan
from smartapp.writeback.profiles import PROFILES, WriteProfile
from smartapp.writeback.referral import (
    CONSULT_MODES,
    REFERRAL_NAMESPACE,
    ItemDecision,
    ShownSuggestion,
    SignedReferral,
    WriteSettings,
    accepted,
    decision_for,
    referral_key,
    shown_for,
    visit_key,
)
from smartapp.writeback.shapes import (
    ACT_CODE,
    CONFIDENTIALITY,
    Visit,
    coach_communication,
    coach_task,
    draft_medication,
    linkage_note,
    provenance,
    security_labels,
    service_request,
)

# Names callers import from here (the screen, tests); kept so their imports do not move.
Planned = PlannedResource
__all__ = [
    "ACT_CODE",
    "CONFIDENTIALITY",
    "CONSULT_MODES",
    "DRAFT_MEDICATION_KINDS",
    "REFERRAL_NAMESPACE",
    "ItemDecision",
    "Planned",
    "ShownSuggestion",
    "SignedReferral",
    "WritePlan",
    "WriteSettings",
    "build_plan",
    "build_transaction",
    "decision_for",
    "note_text",
    "plan_resources",
    "plan_writes",
    "referral_key",
    "security_labels",
    "transaction_bundle",
    "transaction_bundle_from_operations",
    "visit_key",
]

# Suggestions a site may have drafted as orders in the EHR (WriteSettings.draft_medications).
DRAFT_MEDICATION_KINDS = (kinds.MOUD_BUPRENORPHINE, kinds.NALOXONE_KIT)


def plan_resources(
    referral: SignedReferral, settings: WriteSettings, profile: WriteProfile | None = None
) -> list[PlannedResource]:
    """Every resource of the referral, in write order; references between them are
    `urn:uuid:<key>` until they are written. The profile only changes shapes (docStatus,
    the handoff channel), never which facts are recorded."""
    profile = profile or PROFILES["fhir-rest"]
    visit = Visit.of(referral, settings)
    consult = _consult_resources(visit, profile)
    service_request_url = consult[0].full_url if consult else None
    resources = consult + _draft_medications(visit)
    doc_status = profile.forced_doc_status or settings.doc_status
    resources.append(linkage_note(visit, doc_status, service_request_url))
    resources.append(provenance(visit, resources))
    return resources


def _consult_resources(visit: Visit, profile: WriteProfile) -> list[PlannedResource]:
    """An accepted coach consult: the order, the coach team's Task, and where the profile
    hands off by message, a Communication to the coach pool."""
    shown = shown_for(visit.referral, kinds.PRC_CONSULT)
    if not accepted(visit.referral, kinds.PRC_CONSULT) or shown is None:
        return []
    order = service_request(visit, shown)
    resources = [order, coach_task(visit, order.full_url)]
    pool = visit.settings.coach_pool
    if profile.handoff_channel == "communication" and pool:
        resources.append(coach_communication(visit, order.full_url, pool))
    return resources


def _draft_medications(visit: Visit) -> list[PlannedResource]:
    """Draft orders for accepted medications, where the site wants them and has a code."""
    settings = visit.settings
    if not settings.draft_medications:
        return []
    return [
        draft_medication(visit, kind, settings.medication_codes[kind])
        for kind in DRAFT_MEDICATION_KINDS
        if accepted(visit.referral, kind) and settings.medication_codes.get(kind)
    ]


def plan_writes(
    referral: SignedReferral, settings: WriteSettings, profile: WriteProfile
) -> WritePlan:
    """What the outbox will do: each resource, whether it goes to the EHR (and how) or stays
    in Handoff, and its status."""
    return WritePlan.for_profile(profile, plan_resources(referral, settings, profile))


def build_plan(
    referral: SignedReferral, settings: WriteSettings, profile: WriteProfile
) -> dict[str, Any]:
    """`plan_writes` in its stored (JSON) form, for callers that still hold the dict;
    `outbox.submit` takes either form."""
    return plan_writes(referral, settings, profile).to_json()


def build_transaction(referral: SignedReferral, settings: WriteSettings) -> dict:
    """The fhir-rest write: every planned resource in one transaction Bundle, each a
    conditional create keyed on Handoff's identifier, so a retry creates nothing twice."""
    return transaction_bundle(plan_resources(referral, settings))


def transaction_bundle(planned: list[PlannedResource]) -> dict:
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


def transaction_bundle_from_operations(operations: list[Operation]) -> dict:
    """The transaction for planned creates (the outbox keeps operations, not Planned)."""
    return transaction_bundle(
        [PlannedResource(op.key, op.resource, op.conditional or "") for op in operations]
    )
