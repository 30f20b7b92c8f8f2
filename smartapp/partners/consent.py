"""The patient's consent to share a referral with a community partner (42 CFR Part 2 § 2.31:
who may disclose, to whom, for what purpose, how much), kept in Handoff as a FHIR R4 Consent
and logged (`consent-recorded`, `consent-revoked`). Without an active consent nothing of the
referral leaves Handoff; a revocation applies to the very next request. Flask-free.

What a consent lets out is fixed, not chosen per patient: the referral (the ServiceRequest and
the Task that tracks it) and the patient's name, birth date and phone, nothing else of the
chart (`SHARED`, `shared.py` builds exactly that).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import Database, Referral, utcnow
from smartapp.handoffs.service import is_handoff
from smartapp.partners.models import PartnerConsent
from smartapp.partners.registry import Partner
from smartapp.writeback.actor import Actor

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PART2_POLICY = "https://www.ecfr.gov/current/title-42/chapter-I/subchapter-A/part-2"
#: Purposes of use a coach may name (v3 ActReason codes) and their words.
PURPOSES = {"TREAT": "Referral for treatment", "COC": "Care coordination"}
#: What a consent lets the partner see, in words (the form and the Consent's narrative say it).
SHARED = (
    "the referral (the request for care and its status)",
    "the patient's name",
    "date of birth",
    "phone number",
)
SHARED_TYPES = ("ServiceRequest", "Task", "Patient")


class ConsentError(ValueError):
    """A consent that cannot be recorded or revoked; the message says why."""


@dataclass(frozen=True)
class ConsentView:
    """A consent as the pages show it."""

    id: str
    referral_id: str
    partner_id: str
    program_id: str | None
    purpose: str
    status: str
    recorded_by: str | None
    recorded_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    resource: dict[str, Any]


def _view(row: PartnerConsent) -> ConsentView:
    return ConsentView(
        id=row.id,
        referral_id=row.referral_id,
        partner_id=row.partner_id,
        program_id=row.program_id,
        purpose=row.purpose,
        status=row.status,
        recorded_by=row.recorded_by_name,
        recorded_at=row.recorded_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by_name,
        resource=dict(row.resource),
    )


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def consent_resource(
    consent_id: str,
    referral: Referral,
    partner: Partner,
    purpose: str,
    actor: Actor,
    now: datetime,
    program: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The FHIR R4 Consent: privacy consent (scope patient-privacy), an opt-in under 42 CFR
    Part 2, permitting disclosure of this referral's ServiceRequest, Task and a minimal Patient
    to the partner organisation (provision actor IRCP) for `purpose`."""
    patient_name = ((referral.decision.get("shown") or {}).get("patient") or {}).get("name")
    patient = {"reference": f"Patient/{referral.patient_id}"}
    if patient_name:
        patient["display"] = patient_name
    recipient = partner.as_reference()
    shared = "; ".join(SHARED)
    narrative = (
        f"The patient consents to Handoff disclosing {shared} to {partner.name}"
        + (f" ({program['display']})" if program else "")
        + f" for {PURPOSES[purpose].lower()}, under 42 CFR Part 2; recorded by {actor.display}."
    )
    provision = _provision(referral, recipient, purpose, now)
    return {
        "resourceType": "Consent",
        "id": consent_id,
        "meta": {
            "security": [
                {"system": CONFIDENTIALITY, "code": "R", "display": "restricted"},
                {"system": ACT_CODE, "code": "42CFRPart2"},
            ]
        },
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{_escape(narrative)}</p></div>',
        },
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                    "display": "Privacy Consent",
                }
            ]
        },
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]},
            {
                "coding": [
                    {"system": ACT_CODE, "code": "IDSCL", "display": "information disclosure"}
                ]
            },
        ],
        "patient": patient,
        "dateTime": iso(now),
        "performer": [patient],
        "policy": [{"authority": "https://www.ecfr.gov", "uri": PART2_POLICY}],
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN", "display": "opt-in"}]},
        "provision": provision,
    }


def _provision(
    referral: Referral, recipient: dict[str, Any], purpose: str, now: datetime
) -> dict[str, Any]:
    """Permit: disclose this referral's ServiceRequest, Task and minimal Patient to the
    recipient (actor IRCP) for the purpose, from now on."""
    return {
        "type": "permit",
        "period": {"start": iso(now)},
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "reference": recipient,
            }
        ],
        "action": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                        "code": "disclose",
                    }
                ]
            }
        ],
        "purpose": [{"system": ACT_REASON, "code": purpose, "display": PURPOSES[purpose]}],
        "class": [
            {"system": "http://hl7.org/fhir/resource-types", "code": t} for t in SHARED_TYPES
        ],
        "data": [
            {"meaning": "related", "reference": {"reference": f"ServiceRequest/{referral.id}"}}
        ],
    }


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def record(
    db: Database,
    referral_id: str,
    partner: Partner,
    purpose: str,
    actor: Actor,
    program: dict[str, str] | None = None,
    now: datetime | None = None,
) -> ConsentView:
    """Record the patient's consent to share the referral with `partner` (`program`: the
    catalog program's id and display, where one was chosen). An active consent to the same
    partner is kept as it is (a double click records one)."""
    if purpose not in PURPOSES:
        raise ConsentError("Choose the purpose the patient agreed to.")
    now = now or utcnow()
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        if referral is None or not is_handoff(referral):
            raise ConsentError("No such handoff.")
        existing = _active(session, referral_id, partner.id)
        if existing is not None:
            return _view(existing)
        consent_id = uuid.uuid4().hex
        row = PartnerConsent(
            id=consent_id,
            referral_id=referral_id,
            partner_id=partner.id,
            program_id=(program or {}).get("id"),
            purpose=purpose,
            status="active",
            resource=consent_resource(consent_id, referral, partner, purpose, actor, now, program),
            recorded_by_ref=actor.reference,
            recorded_by_name=actor.display,
            recorded_at=now,
        )
        session.add(row)
        _log(session, "consent-recorded", referral, row, actor)
        return _view(row)


def revoke(
    db: Database,
    consent_id: str,
    actor: Actor,
    reason: str | None = None,
    now: datetime | None = None,
) -> ConsentView:
    """The patient withdrew the consent: from now on nothing more of the referral goes to the
    partner (its Consent becomes `inactive`, its provision period ends now)."""
    now = now or utcnow()
    with db.session() as session:
        row = session.get(PartnerConsent, consent_id)
        if row is None:
            raise ConsentError("No such consent.")
        if row.status != "active":
            return _view(row)
        referral = session.get(Referral, row.referral_id)
        row.status = "revoked"
        row.revoked_at, row.revoked_by_ref, row.revoked_by_name = (
            now,
            actor.reference,
            actor.display,
        )
        row.revoke_reason = (reason or "").strip()[:500] or None
        resource = dict(row.resource)
        resource["status"] = "inactive"
        provision = dict(resource.get("provision") or {})
        provision["period"] = dict(provision.get("period") or {}) | {"end": iso(now)}
        resource["provision"] = provision
        row.resource = resource
        if referral is not None:
            _log(session, "consent-revoked", referral, row, actor)
        return _view(row)


def _log(
    session: Session, type_: str, referral: Referral, row: PartnerConsent, actor: Actor
) -> None:
    referral_log.append_by(
        session,
        type_,
        referral,
        actor,
        {
            "referral": row.referral_id,
            "consent": row.id,
            "program": row.program_id,
            "partner": row.partner_id,
            "purpose": row.purpose,
        },
    )


def _active(session: Session, referral_id: str, partner_id: str) -> PartnerConsent | None:
    query = select(PartnerConsent).where(
        PartnerConsent.referral_id == referral_id,
        PartnerConsent.partner_id == partner_id,
        PartnerConsent.status == "active",
    )
    return session.scalars(query).first()


def for_referral(db: Database, referral_id: str) -> list[ConsentView]:
    """Every consent of a referral, newest first (revoked ones too: the page shows them)."""
    with db.session() as session:
        query = (
            select(PartnerConsent)
            .where(PartnerConsent.referral_id == referral_id)
            .order_by(PartnerConsent.recorded_at.desc())
        )
        return [_view(row) for row in session.scalars(query)]


def active_referrals(session: Session, partner_id: str) -> dict[str, tuple[str, str | None]]:
    """referral id -> (consent id, program id) of every referral with an active consent
    naming the partner."""
    query = select(PartnerConsent.referral_id, PartnerConsent.id, PartnerConsent.program_id).where(
        PartnerConsent.partner_id == partner_id, PartnerConsent.status == "active"
    )
    return {referral: (consent, program) for referral, consent, program in session.execute(query)}


def holders(session: Session, referral_id: str) -> set[str]:
    """The partners an active consent shares this referral with."""
    query = select(PartnerConsent.partner_id).where(
        PartnerConsent.referral_id == referral_id, PartnerConsent.status == "active"
    )
    return set(session.scalars(query))


@dataclass(frozen=True)
class HandoffSummary:
    """What the consent form shows of the handoff: who, and which program it is about."""

    referral_id: str
    patient_name: str
    program_id: str | None
    linked_program: str | None
    status: str


def summary(db: Database, referral_id: str) -> HandoffSummary:
    """The handoff the consent is about; ConsentError when there is none."""
    from smartapp.db import CoachHandoff

    with db.session() as session:
        referral = session.get(Referral, referral_id)
        if referral is None or not is_handoff(referral):
            raise ConsentError("No such handoff.")
        row = session.get(CoachHandoff, referral_id)
        shown = (referral.decision.get("shown") or {}).get("patient") or {}
        return HandoffSummary(
            referral_id=referral_id,
            patient_name=shown.get("name") or "the patient",
            program_id=(row.linked_program_id if row else None) or referral.decision.get("program"),
            linked_program=row.linked_program if row else None,
            status=row.status if row else "requested",
        )


def shared_with(db: Database, referral_ids: list[str]) -> dict[str, list[str]]:
    """For the worklist: referral id -> the partner ids an active consent shares it with."""
    if not referral_ids:
        return {}
    with db.session() as session:
        query = select(PartnerConsent.referral_id, PartnerConsent.partner_id).where(
            PartnerConsent.referral_id.in_(referral_ids), PartnerConsent.status == "active"
        )
        found: dict[str, list[str]] = {}
        for referral_id, partner_id in session.execute(query):
            found.setdefault(referral_id, []).append(partner_id)
        return found
