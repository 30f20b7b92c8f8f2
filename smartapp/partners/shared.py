"""What a partner sees of a referral it has the patient's consent for: Handoff's copy of the
Task (owner: the partner organisation), its ServiceRequest without clinical detail, and a
minimal Patient (name, birth date, phone). Nothing else of the chart; nothing at all without
an active consent. Each copy has the same id as the referral (`Task/<referral id>`, ...), so
no EHR id leaves Handoff. The Task's version (`meta.versionId`, the ETag) is a digest of what
the partner sees, so any change it could see (the coach's too) makes an older If-Match fail.

Flask-free: the partner API and the partner web page call these.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import CoachHandoff, Database, Referral
from smartapp.handoffs.lifecycle import BUSINESS_WORDS, HandoffState
from smartapp.handoffs.service import is_handoff, state_of
from smartapp.partners import consent as consents
from smartapp.partners.registry import Partner

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"


class NotShared(LookupError):
    """No such referral, or no active consent shares it with anyone: 404."""


class OtherPartner(PermissionError):
    """The referral is shared, but with another partner: 403."""


@dataclass(frozen=True)
class Shared:
    """One referral as a partner may see it."""

    referral: Referral
    state: HandoffState
    consent_id: str
    program_id: str | None = None  # the partner's program the consent names, if any

    @property
    def id(self) -> str:
        return self.referral.id

    @property
    def shown_patient(self) -> dict[str, Any]:
        return (self.referral.decision.get("shown") or {}).get("patient") or {}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _operation(referral: Referral, type_: str) -> dict[str, Any]:
    for op in referral.plan.get("operations", []):
        if op.get("type") == type_ and op.get("method", "POST") == "POST":
            return op.get("resource") or {}
    return {}


def labels(referral: Referral) -> list[dict]:
    """The referral's own security labels, plus the no-redisclosure refrain: what a partner
    receives under a Part 2 consent it may not pass on."""
    found = list((_operation(referral, "ServiceRequest").get("meta") or {}).get("security") or [])
    if not any(label.get("code") == "NORDSCLCD" for label in found):
        found.append({"system": ACT_CODE, "code": "NORDSCLCD"})
    return found


def task(shared: Shared, partner: Partner) -> dict[str, Any]:
    """Handoff's copy of the Task, as this partner sees it."""
    state = shared.state
    body: dict[str, Any] = {
        "resourceType": "Task",
        "id": shared.id,
        "meta": {"security": labels(shared.referral)},
        "status": state.status,
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{shared.id}"},
        "for": {"reference": f"Patient/{shared.id}"},
        "authoredOn": _iso(shared.referral.created_at),
        "owner": partner.as_reference(),
    }
    if state.updated_at:
        body["lastModified"] = _iso(state.updated_at)
    if state.business_status:
        step = state.business_status
        body["businessStatus"] = _business_concept(step)
    if state.status in ("rejected", "cancelled") and state.closed_reason:
        body["statusReason"] = {"text": state.closed_reason}
    if state.output and state.partner == partner.id:
        body["output"] = [
            {"type": {"text": "Outcome"}, "valueString": state.output},
        ]
    body["meta"]["versionId"] = version_of(body)
    return body


def _business_concept(code: str) -> dict[str, Any]:
    try:
        from smartapp.writeback.business_status import business_status

        return business_status(code).concept()
    except (ImportError, OSError, ValueError):
        return {"text": BUSINESS_WORDS.get(code, code)}


def version_of(task_body: dict[str, Any]) -> str:
    """A digest of what the partner sees of the Task (not its meta or lastModified): its
    version and ETag. A change the partner cannot see (a coach's note) keeps the version."""
    content = {k: v for k, v in task_body.items() if k not in ("meta", "lastModified")}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def service_request(shared: Shared, partner: Partner) -> dict[str, Any]:
    """The referral without its clinical detail (no reasons, notes or encounter)."""
    written = _operation(shared.referral, "ServiceRequest")
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": shared.id,
        "meta": {"security": labels(shared.referral)},
        "status": _request_status(shared.state),
        "intent": "order",
        "subject": {"reference": f"Patient/{shared.id}"},
        "authoredOn": _iso(shared.referral.created_at),
        "performer": [partner.as_reference()],
    }
    if shared.program_id:
        body["performer"].append({"reference": f"HealthcareService/{shared.program_id}"})
    for key in ("code", "category", "priority"):
        if written.get(key):
            body[key] = written[key]
    requester = (written.get("requester") or {}).get("display")
    if requester:
        body["requester"] = {"display": requester}
    return body


def _request_status(state: HandoffState) -> str:
    if state.status == "completed":
        return "completed"
    if state.status in ("cancelled", "rejected"):
        return "revoked"
    return "active"


def patient(shared: Shared) -> dict[str, Any]:
    """Name, birth date and phone: nothing else (no identifiers, address or gender)."""
    shown = shared.shown_patient
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": shared.id,
        "meta": {"security": labels(shared.referral)},
    }
    if shown.get("name") and shown.get("name") != "Unknown":
        body["name"] = [{"text": shown["name"]}]
    if shown.get("birthDate"):
        body["birthDate"] = shown["birthDate"]
    contact = (shared.referral.decision.get("shown") or {}).get("contact") or {}
    phone = contact.get("phone") or shown.get("phone")
    if isinstance(phone, str) and phone.strip():
        body["telecom"] = [{"system": "phone", "value": phone.strip()}]
    return body


# -- access -------------------------------------------------------------------------------


def _shared(session: Session, referral: Referral, consent: tuple[str, str | None]) -> Shared:
    state = state_of(session.get(CoachHandoff, referral.id), referral.id)
    return Shared(referral=referral, state=state, consent_id=consent[0], program_id=consent[1])


def find(session: Session, partner: Partner, referral_id: str) -> Shared:
    """The referral if an active consent shares it with `partner`; OtherPartner (403) when it
    is shared only with others, NotShared (404) when with nobody (or there is no such one)."""
    referral = session.get(Referral, referral_id)
    if referral is None or not is_handoff(referral):
        raise NotShared(referral_id)
    holders = consents.holders(session, referral_id)
    if partner.id not in holders:
        if holders:
            raise OtherPartner(referral_id)
        raise NotShared(referral_id)
    active = consents.active_referrals(session, partner.id)
    return _shared(session, referral, active[referral_id])


def search(session: Session, partner: Partner, statuses: set[str] | None = None) -> list[Shared]:
    """Every referral shared with `partner` (oldest first), optionally by Task status."""
    active = consents.active_referrals(session, partner.id)
    if not active:
        return []
    query = select(Referral).where(Referral.id.in_(list(active))).order_by(Referral.created_at)
    found = []
    for referral in session.scalars(query):
        if not is_handoff(referral):
            continue
        item = _shared(session, referral, active[referral.id])
        if statuses is None or item.state.status in statuses:
            found.append(item)
    return found


def log_read(session: Session, partner: Partner, shared: Shared, how: str) -> None:
    """`partner-read`: which partner read which referral, and how (api or web)."""
    referral_log.append_about(
        session,
        "partner-read",
        shared.referral,
        user_ref=partner.reference,
        user_name=partner.name,
        data={
            "partner": partner.id,
            "task": f"Task/{shared.id}",
            "referral": shared.id,
            "consent": shared.consent_id,
            "via": how,
            "actor_kind": "partner",
        },
    )


def read_task(db: Database, partner: Partner, referral_id: str, how: str) -> dict[str, Any]:
    """The Task for `partner` (logged as read); NotShared or OtherPartner otherwise."""
    with db.session() as session:
        shared = find(session, partner, referral_id)
        log_read(session, partner, shared, how)
        return task(shared, partner)
