"""Where a launch keeps its state between requests: the pending authorization (state, PKCE
verifier, nonce; single use) and the launch context (patient, user, scopes, encrypted tokens),
logged in the referral log. The launch service uses these; views never touch the rows."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, Update, bindparam, delete, insert, update
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import LaunchContext, PendingAuthorization, Referral, stored_utc
from smartapp.launch.client import AuthorizationRequest, SmartConfiguration, fhir_user_reference
from smartapp.launch.registrations import Registration
from smartapp.services import Services
from smartapp.writeback.referral import visit_key

# The launch's statements, built once: Core on the tables (no ORM unit of work, no statement
# built per call); the values are bound per call.
_PENDING = cast(Table, PendingAuthorization.__table__)
_CONTEXTS = cast(Table, LaunchContext.__table__)
_REMEMBER = insert(_PENDING)
_TAKE = delete(_PENDING).where(_PENDING.c.state == bindparam("take_state")).returning(*_PENDING.c)
_OPEN = insert(_CONTEXTS)


def remember_authorization(
    services: Services,
    registration: Registration,
    config: SmartConfiguration,
    auth: AuthorizationRequest,
    browser_id: str,
) -> None:
    """Keep an authorization request in flight until its callback, bound to this browser
    (one INSERT, committed on its own; nothing reads the row back here)."""
    with services.db.statement() as db:
        db.execute(
            _REMEMBER,
            {
                "state": auth.state,
                "browser_id": browser_id,
                "registration_id": registration.id,
                "iss": registration.iss,
                "code_verifier": auth.code_verifier,
                "nonce": auth.nonce,
                "token_endpoint": config.token_endpoint,
                "jwks_uri": config.jwks_uri,
            },
        )


def take_authorization(services: Services, state: str) -> PendingAuthorization | None:
    """The authorization request of `state`, deleted as it is read (one DELETE ... RETURNING:
    single use, whatever happens next, and two callbacks with one state cannot both get it).
    None for an empty, unknown or used state. The row comes back as a PendingAuthorization
    that belongs to no session."""
    if not state:
        return None
    with services.db.statement() as db:
        row = db.execute(_TAKE, {"take_state": state}).first()
    return PendingAuthorization(**row._asdict()) if row is not None else None


def authorization_age(pending: PendingAuthorization, now: datetime) -> timedelta:
    """How long ago the authorization request was made."""
    return now - stored_utc(pending.created_at)


def open_context(
    services: Services,
    pending: PendingAuthorization,
    registration: Registration,
    token: dict,
    claims: dict,
    browser_id: str,
) -> str:
    """Store the launch context (tokens encrypted, bound to this browser), log the launch in
    the referral log, and return the new context's id."""
    context_id = secrets.token_urlsafe(24)
    expires_in = token.get("expires_in")
    values = {
        "id": context_id,
        "browser_id": browser_id,
        "registration_id": registration.id,
        "iss": pending.iss,
        "patient_id": str(token["patient"]),
        "encounter_id": token.get("encounter"),
        "user_ref": fhir_user_reference(claims.get("fhirUser"), pending.iss),
        "scope": token.get("scope", ""),
        "need_patient_banner": 1 if token.get("need_patient_banner", True) else 0,
        "token_ciphertext": services.cipher.encrypt(token, context_id),
        "token_endpoint": pending.token_endpoint,
        "access_expires_at": (datetime.now(UTC) + timedelta(seconds=int(expires_in)))
        if expires_in
        else None,
    }
    values["visit_key"] = visit_key(values["iss"], values["encounter_id"], values["patient_id"])
    context = LaunchContext(**values)  # what the log event is about; the row goes in by Core
    with services.db.session() as db:
        db.execute(_OPEN, values)
        referral_log.append_about(
            db,
            "launch",
            context,
            data={"scope": context.scope, "registration": registration.id},
            user_name=claims.get("name"),
        )
        _wake_waiting_writes(db, context)
    return context_id


def _wake_statement(in_encounter: bool) -> Update:
    """The UPDATE of `_wake_waiting_writes` (built once per form; values bound per call)."""
    referrals = cast(Table, Referral.__table__)
    table = referrals.c
    encounter = (
        table.encounter_id == bindparam("wake_encounter_id")
        if in_encounter
        else table.encounter_id.is_(None)
    )
    return (
        update(referrals)
        .where(
            table.iss == bindparam("wake_iss"),
            table.patient_id == bindparam("wake_patient_id"),
            encounter,
            table.status == "queued",
            table.next_attempt_at > bindparam("wake_now"),
        )
        .values(next_attempt_at=bindparam("wake_now"))
    )


_WAKE = {True: _wake_statement(True), False: _wake_statement(False)}


def _wake_waiting_writes(db: Session, context: LaunchContext) -> None:
    """A new launch of a visit brings fresh credentials: its queued writes (waiting for a
    launch where the EHR gives no backend access, or backing off) are due now, not at their
    next scheduled retry."""
    values = {
        "wake_iss": context.iss,
        "wake_patient_id": context.patient_id,
        "wake_now": datetime.now(UTC),
    }
    if context.encounter_id:
        values["wake_encounter_id"] = context.encounter_id
    db.execute(_WAKE[bool(context.encounter_id)], values)
