"""What Handoff writes from: the signed decision and the site's write settings (plain data).

Identifiers are stable per (EHR, encounter, suggestion), so a retry or a double click can never
create a second referral.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

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
    """A registration's write choices (codes, the coach team, Part 2, draft orders)."""

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


def visit_key(iss: str, encounter_id: str | None, patient_id: str) -> str:
    """The key of one visit at one EHR: its referral's `visit_key`, kept on each launch of it
    (the launch screen's, CDS Hooks' and the launch store's are this one)."""
    return referral_key(iss, encounter_id, patient_id, "visit")


def decision_for(referral: SignedReferral, kind: str) -> ItemDecision | None:
    return next((d for d in referral.decisions if d.kind == kind), None)


def shown_for(referral: SignedReferral, kind: str) -> ShownSuggestion | None:
    return next((s for s in referral.shown if s.kind == kind), None)


def accepted(referral: SignedReferral, kind: str) -> bool:
    """Whether the physician accepted the suggestion (an explicit decision, not its absence)."""
    decision = decision_for(referral, kind)
    return decision is not None and decision.accepted
