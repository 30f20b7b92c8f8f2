"""The outbox: a signed referral is stored before any write is tried, then delivered.

The only module that sends writes to an EHR. One row per visit (a unique key), so a double
click or a second Sign finds the first referral instead of making another.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from smartapp import referral_log
from smartapp.db import Database, Referral, utcnow
from smartapp.fhir import FhirClient, FhirError

log = logging.getLogger("handoff.outbox")


def submit(
    db: Database,
    *,
    visit_key: str,
    context_id: str,
    iss: str,
    patient_id: str,
    encounter_id: str | None,
    user_ref: str | None,
    decision: dict,
    bundle: dict,
) -> tuple[Referral, bool]:
    """Store the signed referral; returns (row, created). An existing row for the visit wins."""
    try:
        with db.session() as session:
            referral = Referral(
                id=secrets.token_hex(16),
                visit_key=visit_key,
                context_id=context_id,
                iss=iss,
                patient_id=patient_id,
                encounter_id=encounter_id,
                user_ref=user_ref,
                decision=decision,
                bundle=bundle,
                status="queued",
            )
            session.add(referral)
            referral_log.append(
                session,
                "decision",
                user_ref=user_ref,
                iss=iss,
                patient_id=patient_id,
                encounter_id=encounter_id,
                data={"referral": referral.id, **decision},
            )
        return referral, True
    except IntegrityError:
        existing = for_visit(db, visit_key)
        if existing is None:  # pragma: no cover - the unique key guarantees a row
            raise
        return existing, False


def for_visit(db: Database, visit_key: str) -> Referral | None:
    with db.session() as session:
        return session.scalar(select(Referral).where(Referral.visit_key == visit_key))


def deliver(db: Database, referral_id: str, client: FhirClient) -> Referral:
    """Send the referral's transaction once; record the outcome in the row and the log."""
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        if referral is None or referral.status == "written":
            return referral
        referral.attempts += 1
        bundle = referral.bundle
    outcome: dict
    try:
        response = client.post_bundle(bundle)
        written = _written(bundle, response)
        outcome = {"status": "written", "written": written, "last_error": None}
    except FhirError as exc:
        # 401: the token expired under us; the caller refreshes and the write is tried again.
        status = "queued" if exc.transient or exc.status == 401 else "failed"
        outcome = {"status": status, "written": None, "last_error": str(exc)}
        log.warning("write %s: referral=%s http=%s", status, referral_id[:8], exc.status)
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        referral.status = outcome["status"]
        referral.written = outcome["written"]
        referral.last_error = outcome["last_error"]
        referral.updated_at = utcnow()
        referral_log.append(
            session,
            "write-attempt",
            user_ref=referral.user_ref,
            iss=referral.iss,
            patient_id=referral.patient_id,
            encounter_id=referral.encounter_id,
            data={
                "referral": referral.id,
                "attempt": referral.attempts,
                "outcome": outcome["status"],
                "error": outcome["last_error"],
                "written": outcome["written"],
            },
        )
    return referral


def hold(db: Database, referral_id: str, reason: str) -> Referral:
    """Keep a signed referral in Handoff only (the EHR cannot take it); visible, not retried."""
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        referral.status = "held"
        referral.last_error = reason
        referral.updated_at = utcnow()
        referral_log.append(
            session,
            "write-held",
            user_ref=referral.user_ref,
            iss=referral.iss,
            patient_id=referral.patient_id,
            encounter_id=referral.encounter_id,
            data={"referral": referral.id, "reason": reason},
        )
    return referral


def _written(bundle: dict, response: dict) -> list[dict]:
    """Pair each entry we sent with the server's answer: type, id, HTTP status."""
    written = []
    for sent, answer in zip(bundle.get("entry", []), response.get("entry", []), strict=False):
        reply = answer.get("response", {})
        location = reply.get("location", "")
        resource = answer.get("resource") or {}
        type_ = sent["resource"]["resourceType"]
        res_id = resource.get("id") or _id_from_location(location, type_)
        written.append({"resourceType": type_, "id": res_id, "status": reply.get("status", "")})
    return written


def _id_from_location(location: str, type_: str) -> str | None:
    parts = location.split("/")
    if type_ in parts:
        index = parts.index(type_)
        if index + 1 < len(parts):
            return parts[index + 1]
    return None
