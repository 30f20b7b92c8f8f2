"""Access tokens for a launch context, refreshed before they expire, and the credentials of a
referral's writes (its launch, else Handoff's backend services token). No Flask here: the
screen and the outbox worker both use it; a refused refresh raises SessionEnded for them to
report."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, select

from smartapp.db import LaunchContext
from smartapp.fhir.client import FhirClient
from smartapp.launch import backend
from smartapp.launch import client as smart

log = logging.getLogger("handoff.sessions")
#: Refresh margin defaults (settings TOKEN_REFRESH_MARGIN_FRACTION / _MAX_SECONDS).
REFRESH_MARGIN_FRACTION = 0.1
REFRESH_MARGIN_MAX_SECONDS = 60
#: The lifetime assumed when the EHR does not say (`expires_in`) how long a token lasts.
ASSUMED_LIFETIME_SECONDS = 300


class SessionEnded(Exception):
    """The EHR no longer accepts this launch's credentials; a new launch is needed.
    `rejected_now`: the launch's access token, live by its expiry, was the one the EHR just
    refused (a 401, then its refresh failed), not another credential's."""

    rejected_now = False


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def refresh_margin(lifetime_seconds: float, fraction: float, max_seconds: float) -> timedelta:
    """How long before its expiry a token is refreshed: a share of its lifetime, capped, so a
    short-lived token is not treated as dead for most of its life (a 60 s margin on a 2-minute
    token would be half of it)."""
    return timedelta(seconds=max(0.0, min(max_seconds, fraction * lifetime_seconds)))


def _margin_settings() -> tuple[float, float]:
    """(fraction, max seconds) from the app's settings; the defaults outside an app."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return REFRESH_MARGIN_FRACTION, REFRESH_MARGIN_MAX_SECONDS
    config = current_app.config
    return (
        config.get("TOKEN_REFRESH_MARGIN_FRACTION", REFRESH_MARGIN_FRACTION),
        config.get("TOKEN_REFRESH_MARGIN_MAX_SECONDS", REFRESH_MARGIN_MAX_SECONDS),
    )


def refresh_due(token: dict, expires: datetime | None, now: datetime) -> bool:
    """Whether the token is inside its refresh margin (or past its expiry)."""
    if expires is None:
        return False
    try:
        lifetime = float(token.get("expires_in") or ASSUMED_LIFETIME_SECONDS)
    except (TypeError, ValueError):
        lifetime = ASSUMED_LIFETIME_SECONDS
    return expires - now < refresh_margin(lifetime, *_margin_settings())


def client_for(
    services, context_id: str, force_refresh: bool = False, loaded: LaunchContext | None = None
) -> FhirClient:
    """A FHIR client for the context's EHR with a live access token: refreshed inside its
    margin when the EHR gave a refresh token; without one, used until it really expires.
    `loaded`: the context as the caller read it in this request, whose token is used as is
    while it is live; a refresh (due, expired, or forced after a 401) always starts from the
    row as stored, never from a copy another request may have refreshed meanwhile."""
    now = datetime.now(UTC)
    if loaded is not None and not force_refresh and loaded.id == context_id:
        token = services.cipher.decrypt(loaded.token_ciphertext, loaded.id)
        if not _refresh_needed(token, loaded, now):
            return FhirClient(loaded.iss, token["access_token"], services.timeout)
    context = _stored_credentials(services, context_id)
    if context is None:
        raise SessionEnded("This launch is unknown.")
    token = services.cipher.decrypt(context.token_ciphertext, context.id)
    expired = _expired(context, now)
    if force_refresh or _refresh_needed(token, context, now):
        try:
            token = _refresh(services, context, token)
        except SessionEnded as ended:
            if force_refresh and not expired:  # refused after a 401: never used again
                ended.rejected_now = True
                _mark_expired(services, context.id, now)
            raise
    return FhirClient(context.iss, token["access_token"], services.timeout)


class Credentials(Protocol):
    """What a launch context's credentials are read from: a loaded LaunchContext, or its
    credential columns alone (`_stored_credentials`)."""

    @property
    def id(self) -> str: ...
    @property
    def iss(self) -> str: ...
    @property
    def registration_id(self) -> str: ...
    @property
    def token_ciphertext(self) -> bytes: ...
    @property
    def token_endpoint(self) -> str: ...
    @property
    def access_expires_at(self) -> datetime | None: ...


# The columns a client needs; not the whole row: `shown` (the screen's suggestions, a large
# JSON document) was parsed on every write's credentials and never used.
_CREDENTIALS = select(
    LaunchContext.id,
    LaunchContext.iss,
    LaunchContext.registration_id,
    LaunchContext.token_ciphertext,
    LaunchContext.token_endpoint,
    LaunchContext.access_expires_at,
).where(LaunchContext.id == bindparam("context_id"))


def _stored_credentials(services, context_id: str) -> Credentials | None:
    """The context's credential columns as stored now (None for an unknown context)."""
    with services.db.read() as connection:  # a read: no ORM unit of work
        return connection.execute(_CREDENTIALS, {"context_id": context_id}).first()


def _expired(context: Credentials, now: datetime) -> bool:
    expires = _aware(context.access_expires_at)
    return expires is not None and expires <= now


def _refresh_needed(token: dict, context: Credentials, now: datetime) -> bool:
    """Expired, or inside the refresh margin with a refresh token to use."""
    expires = _aware(context.access_expires_at)
    due = bool(token.get("refresh_token")) and refresh_due(token, expires, now)
    return _expired(context, now) or due


def _mark_expired(services, context_id: str, now: datetime) -> None:
    """The EHR refused the launch's access token (and its refresh): expired as of now, so the
    next write goes to its refresh (or the backend) without trying it again."""
    with services.db.session() as db:
        row = db.get(LaunchContext, context_id)
        if row is not None:
            row.access_expires_at = now


def _refresh(services, context: Credentials, token: dict) -> dict:
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
        if getattr(exc.__cause__, "error", None) == "invalid_grant":  # final (RFC 6749 5.2)
            with services.db.session() as db:
                row = db.get(LaunchContext, context.id)
                row.token_ciphertext = services.cipher.encrypt(
                    {k: v for k, v in token.items() if k != "refresh_token"}, context.id
                )
        raise SessionEnded(
            "The EHR ended this session. Launch Handoff again from the chart."
        ) from exc
    token = token | fresh
    with services.db.session() as db:
        row = db.get(LaunchContext, context.id)
        row.token_ciphertext = services.cipher.encrypt(token, context.id)
        row.access_expires_at = datetime.now(UTC) + timedelta(
            seconds=int(fresh.get("expires_in", ASSUMED_LIFETIME_SECONDS))
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


def client_for_referral(
    services, referral, force_refresh: bool = False, loaded: LaunchContext | None = None
) -> FhirClient:
    """Credentials for a referral's writes: its own launch, else the newest launch of the same
    visit (each refreshed as usual), else Handoff's backend services token at that EHR
    (launch/backend.py). Where the registration gives no backend access (or the EHR refuses
    it), the write waits, queued and visible, and CredentialsUnavailable says for what.
    `loaded`: a launch context the caller read in this request (`client_for`)."""
    from smartapp.writeback.outbox import CredentialsUnavailable

    def candidates() -> Iterator[str | None]:
        """Its own launch, then (only where that one has ended) the visit's newest."""
        yield referral.context_id
        yield newest_context_for_visit(
            services, referral.iss, referral.patient_id, referral.encounter_id
        )

    launch_refused = False  # the 401 that forced this refresh was the launch token's
    tried: set[str] = set()
    for context_id in candidates():
        if not context_id or context_id in tried:
            continue
        tried.add(context_id)
        try:
            return client_for(services, context_id, force_refresh=force_refresh, loaded=loaded)
        except SessionEnded as ended:
            launch_refused = launch_refused or ended.rejected_now
            continue
    registration = services.registry.for_issuer(referral.iss)
    if registration is None or registration.backend is None:
        raise CredentialsUnavailable(backend.waiting_message(registration, referral.iss))
    try:
        return backend.client(
            registration,
            services.keys,
            services.timeout,
            force_refresh=force_refresh and not launch_refused,  # its own token still good
            margin=_margin_settings(),
        )
    except backend.BackendError as exc:
        log.warning("backend access unavailable: referral=%s (%s)", referral.id[:8], exc)
        raise CredentialsUnavailable(str(exc)) from exc
