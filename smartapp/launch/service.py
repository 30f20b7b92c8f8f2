"""The SMART launch's work, without Flask: begin an authorization (discovery, PKCE, the state
kept for the callback) and complete it at the callback (state checked, code traded, identity
verified, the launch context stored and logged).

The views parse the request and render what these return. A refusal is a LaunchRefused that
carries the HTTP status and the words to show (never a token or PHI); each is logged here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from smartapp.db import PendingAuthorization
from smartapp.launch import client as smart
from smartapp.launch import store
from smartapp.launch.keys import KeyStoreError
from smartapp.launch.registrations import Registration, RegistrationError
from smartapp.services import Services

log = logging.getLogger("handoff.launch")


class LaunchRefused(Exception):
    """The launch cannot go on: `status` is the HTTP answer, `description` what the page says."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass(frozen=True)
class LaunchSettings:
    """What a launch needs from the app's settings (the views read them)."""

    redirect_uri: str
    state_ttl: timedelta
    timeout: tuple[float, float]


@dataclass(frozen=True)
class CallbackParams:
    """The authorization server's answer at /callback, as the browser brought it."""

    state: str
    code: str | None = None
    error: str | None = None
    error_description: str | None = None


@dataclass(frozen=True)
class Browser:
    """The browser's session id, as the web layer keeps it: whether the session holds an id,
    and a fresh id for what a completed launch opens (no session fixation)."""

    holds: Callable[[str | None], bool]
    renew: Callable[[], str]


def begin_authorization(
    services: Services,
    registration: Registration,
    launch_value: str | None,
    settings: LaunchSettings,
    browser_id: Callable[[], str],
) -> str:
    """Discovery, then the authorize URL to send the browser to; its state, PKCE verifier and
    nonce are kept for the callback, bound to this browser. Without `launch_value` it is a
    standalone launch."""
    try:
        config = services.ehr_documents.configuration(registration.iss, settings.timeout)
        auth = smart.authorization_request(
            registration, config, settings.redirect_uri, launch_value
        )
    except smart.LaunchError as exc:
        log.warning("launch failed at discovery: %s", exc)
        raise LaunchRefused(502, str(exc)) from exc
    store.remember_authorization(services, registration, config, auth, browser_id())
    return auth.url


def complete_launch(
    services: Services, params: CallbackParams, settings: LaunchSettings, browser: Browser
) -> str:
    """Check the state (known, this browser's, unused, fresh), trade the code, verify the
    id_token, then store the launch context; returns its id (the screen to show)."""
    pending = _fresh_authorization(services, params.state, settings.state_ttl, browser)
    code = _authorization_code(params)
    registration = services.registry.by_id(pending.registration_id)
    if registration is None:
        raise LaunchRefused(403, "This EHR is no longer registered with Handoff.")
    token = _exchange(services, registration, pending, code, settings)
    claims = _identity(token, pending, registration, settings.timeout, services.ehr_documents)
    bound_to = browser.renew()  # a fresh session id for what this launch opens
    context_id = store.open_context(services, pending, registration, token, claims, bound_to)
    log.info("launch ok: context=%s registration=%s", context_id[:8], registration.id)
    return context_id


def _fresh_authorization(
    services: Services, state: str, ttl: timedelta, browser: Browser
) -> PendingAuthorization:
    """The authorization request the callback answers: known, unused, started in this browser
    and not older than the state's lifetime."""
    pending = store.take_authorization(services, state)
    if pending is None or not browser.holds(pending.browser_id):
        log.warning("callback refused: unknown, reused or foreign state")
        raise LaunchRefused(
            400,
            "This sign-in link is not valid (it was used already, or it was "
            "started in another browser). Launch Handoff again from the chart.",
        )
    if store.authorization_age(pending, datetime.now(UTC)) > ttl:
        log.warning("callback refused: state expired")
        raise LaunchRefused(400, "The sign-in took too long. Launch Handoff again from the chart.")
    return pending


def _authorization_code(params: CallbackParams) -> str:
    """The code the EHR granted; its refusal, or no code, ends the launch."""
    if params.error:
        said = smart.ehr_error(params.error, params.error_description)
        log.warning("callback: authorization denied by the EHR (%s)", said)
        raise LaunchRefused(
            403, f"The EHR did not authorize Handoff for this patient. The EHR said: {said}"
        )
    if not params.code:
        raise LaunchRefused(400, "The EHR returned no authorization code.")
    return params.code


def _exchange(
    services: Services,
    registration: Registration,
    pending: PendingAuthorization,
    code: str,
    settings: LaunchSettings,
) -> dict:
    """The token response for the code (PKCE verifier sent, client authenticated)."""
    try:
        return smart.exchange_code(
            registration,
            pending.token_endpoint,
            settings.redirect_uri,
            code,
            pending.code_verifier,
            settings.timeout,
            signing_key=services.signing_key(registration),
        )
    except (smart.LaunchError, KeyStoreError, RegistrationError) as exc:
        log.warning("callback failed at token exchange: %s", exc)
        raise LaunchRefused(400, str(exc)) from exc


def _identity(
    token: dict,
    pending: PendingAuthorization,
    registration: Registration,
    timeout: tuple[float, float],
    documents: smart.EhrDocuments,
) -> dict:
    """The user's verified identity claims; a launch without a user (fhirUser) or a patient
    does not go on: every decision is recorded under the user's name, for one patient."""
    try:
        claims = verified_identity(token, pending, registration, timeout, documents)
    except smart.LaunchError as exc:
        log.warning("callback refused: %s", exc)
        raise LaunchRefused(400, f"{exc} Handoff did not use the EHR's token.") from exc
    if not claims.get("fhirUser"):
        log.warning("callback refused: identity token names no fhirUser")
        raise LaunchRefused(
            400,
            "The EHR did not say who you are (no fhirUser). Handoff records "
            "every decision under the user's name, so it cannot go on.",
        )
    if not token.get("patient"):
        log.warning("callback: token response carries no patient context")
        raise LaunchRefused(400, "The EHR did not say which patient this launch is for.")
    return claims


def verified_identity(
    token: dict,
    pending: PendingAuthorization,
    registration: Registration,
    timeout: tuple[float, float],
    documents: smart.EhrDocuments,
) -> dict:
    """The id_token's claims, verified against the issuer's keys; no id_token is refused."""
    if not token.get("id_token"):
        raise smart.LaunchError("The EHR returned no identity token (id_token).")
    if not pending.jwks_uri:
        raise smart.LaunchError(
            "The EHR publishes no keys (jwks_uri) to verify the user's identity."
        )
    key_set = documents.key_set(pending.jwks_uri, smart.id_token_kid(token["id_token"]), timeout)
    return smart.verify_id_token(
        token["id_token"], key_set, pending.iss, registration.client_id, pending.nonce
    )
