"""Access tokens for a launch context, refreshed before they expire. No Flask here: the screen
and the outbox worker both use it; a refused refresh raises SessionEnded for them to report."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from smartapp import smart
from smartapp.db import LaunchContext
from smartapp.fhir import FhirClient

log = logging.getLogger("handoff.sessions")
REFRESH_MARGIN = timedelta(seconds=60)


class SessionEnded(Exception):
    """The EHR no longer accepts this launch's credentials; a new launch is needed."""


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def client_for(services, context_id: str, force_refresh: bool = False) -> FhirClient:
    """A FHIR client for the context's EHR with a live access token."""
    with services.db.session() as db:
        context = db.get(LaunchContext, context_id)
        if context is None:
            raise SessionEnded("This launch is unknown.")
        db.expunge(context)
    token = services.cipher.decrypt(context.token_ciphertext, context.id)
    expires = _aware(context.access_expires_at)
    if force_refresh or (expires is not None and expires - datetime.now(UTC) < REFRESH_MARGIN):
        token = _refresh(services, context, token)
    return FhirClient(context.iss, token["access_token"], services.timeout)


def _refresh(services, context: LaunchContext, token: dict) -> dict:
    registration = services.registry.by_id(context.registration_id)
    if registration is None or not token.get("refresh_token"):
        log.warning("session ended: no refresh token (context=%s)", context.id[:8])
        raise SessionEnded("Your Handoff session has expired. Launch it again from the chart.")
    try:
        fresh = smart.refresh(
            registration,
            context.token_endpoint,
            token["refresh_token"],
            services.timeout,
            signing_key=services.signing_key(registration),
        )
    except smart.LaunchError as exc:
        log.warning("session ended: refresh refused (%s)", exc)
        raise SessionEnded(
            "The EHR ended this session. Launch Handoff again from the chart."
        ) from exc
    token = token | fresh
    with services.db.session() as db:
        row = db.get(LaunchContext, context.id)
        row.token_ciphertext = services.cipher.encrypt(token, context.id)
        row.access_expires_at = datetime.now(UTC) + timedelta(
            seconds=int(fresh.get("expires_in", 300))
        )
    log.info("session refreshed: context=%s", context.id[:8])
    return token


def newest_context_for_visit(
    services, iss: str, patient_id: str, encounter_id: str | None
) -> str | None:
    """The most recent launch for the same visit: a queued write can resume with its
    credentials after the launch that signed it has ended."""
    with services.db.session() as db:
        query = (
            select(LaunchContext.id)
            .where(
                LaunchContext.iss == iss,
                LaunchContext.patient_id == patient_id,
                LaunchContext.encounter_id == encounter_id,
            )
            .order_by(LaunchContext.created_at.desc())
        )
        return db.scalars(query).first()


def client_for_referral(services, referral, force_refresh: bool = False) -> FhirClient:
    """Credentials for a referral's writes: its own launch, else the newest launch of the same
    visit; none alive means the write waits (queued, visible) for the next launch."""
    from smartapp.outbox import CredentialsUnavailable

    candidates = [
        referral.context_id,
        newest_context_for_visit(
            services, referral.iss, referral.patient_id, referral.encounter_id
        ),
    ]
    for context_id in dict.fromkeys(c for c in candidates if c):
        try:
            return client_for(services, context_id, force_refresh=force_refresh)
        except SessionEnded:
            continue
    raise CredentialsUnavailable(
        "Waiting for the EHR to accept Handoff again: launch Handoff for this patient to resume."
    )
