"""SMART Backend Services: Handoff's own access token at an EHR, for the writes no physician's
launch is live for (outbox retries after the session, coach and partner updates, completion).
No Flask here.

Per registration with a `backend:` block: the token endpoint from the EHR's
`.well-known/smart-configuration` (or the block's `token_endpoint`), then a client_credentials
grant authenticated by a `private_key_jwt` assertion signed with Handoff's key (the launch's
own assertion, `launch.client.SmartPrivateKeyJWT`: kid, RS384/ES384, 5-minute exp, fresh
jti), asking the block's `system/` scopes. The token is kept in this process's memory only
(never stored, never logged) and used until shortly before it expires; a 401 from the EHR
fetches a new one (`force_refresh`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import requests
from authlib.integrations.requests_client import OAuth2Session

from smartapp.fhir.client import FhirClient
from smartapp.launch import client as smart
from smartapp.launch.keys import KeyStore, KeyStoreError
from smartapp.launch.registrations import BackendSettings, Registration

log = logging.getLogger("handoff.backend")

GRANT_TYPE = "client_credentials"
#: Renewal margin defaults, as for launch tokens (settings TOKEN_REFRESH_MARGIN_*).
RENEW_MARGIN = (0.1, 60.0)
#: The lifetime assumed when the EHR does not say (SMART recommends five minutes).
ASSUMED_LIFETIME_SECONDS = 300


class BackendError(Exception):
    """No backend token now; the message says why, safe for the queue and the log (no token)."""


def waiting_message(registration: Registration | None, iss: str) -> str:
    """What a queued write waits for when no launch is live and backend access is not there."""
    if registration is None:
        return (
            "Waiting for the next launch of this visit: the EHR at "
            f"{iss} is no longer registered with Handoff."
        )
    return (
        "Waiting for the next launch of this visit: "
        f"{registration.name} gives Handoff no backend access."
    )


@dataclass
class _Token:
    access_token: str = field(repr=False)
    renew_at: float  # time.monotonic()


class BackendTokens:
    """Backend tokens per EHR (iss), client and scopes, in this process's memory, renewed
    before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._endpoints: dict[str, str] = {}

    def access_token(
        self,
        registration: Registration,
        keys: KeyStore,
        timeout: tuple[float, float],
        force: bool = False,
        margin: tuple[float, float] = RENEW_MARGIN,
    ) -> str:
        """A live backend token for `registration` (BackendError when it has none to give)."""
        settings = registration.backend
        if settings is None:
            raise BackendError(waiting_message(registration, registration.iss))
        cache_key = (registration.iss, settings.client_id, " ".join(settings.scopes))
        with self._lock:  # one fetch at a time: concurrent writers share the token
            cached = self._tokens.get(cache_key)
            if cached is not None and not force and time.monotonic() < cached.renew_at:
                return cached.access_token
            self._tokens.pop(cache_key, None)  # spent or refused: never used again
            endpoint = self.token_endpoint(registration, timeout)
            response = request_token(registration, settings, endpoint, keys, timeout)
            lifetime = _lifetime(response)
            renew_in = lifetime - min(margin[1], margin[0] * lifetime)
            self._tokens[cache_key] = _Token(
                response["access_token"], time.monotonic() + max(renew_in, 0.0)
            )
            log.info(
                "backend token issued: registration=%s client=%s expires_in=%ss scope=%s",
                registration.id,
                settings.client_id,
                lifetime,
                response.get("scope", ""),
            )
            return response["access_token"]

    def token_endpoint(self, registration: Registration, timeout: tuple[float, float]) -> str:
        """The block's token endpoint, else the EHR's advertised one (discovered once)."""
        settings = registration.backend
        if settings is not None and settings.token_endpoint:
            return settings.token_endpoint
        if registration.iss not in self._endpoints:
            try:
                config = smart.discover(registration.iss, timeout)
            except smart.LaunchError as exc:
                raise BackendError(
                    f"Waiting for {registration.name}: its SMART configuration could not be "
                    f"read ({exc})"
                ) from exc
            self._endpoints[registration.iss] = config.token_endpoint
        return self._endpoints[registration.iss]

    def forget(self, iss: str | None = None) -> None:
        """Drop cached tokens and discovered endpoints (all, or one EHR's)."""
        with self._lock:
            for key in [k for k in self._tokens if iss in (None, k[0])]:
                del self._tokens[key]
            for known in [i for i in self._endpoints if iss in (None, i)]:
                del self._endpoints[known]


def _lifetime(response: dict) -> float:
    try:
        return float(response.get("expires_in") or ASSUMED_LIFETIME_SECONDS)
    except (TypeError, ValueError):
        return float(ASSUMED_LIFETIME_SECONDS)


def request_token(
    registration: Registration,
    settings: BackendSettings,
    token_endpoint: str,
    keys: KeyStore,
    timeout: tuple[float, float],
) -> dict:
    """One client_credentials request, the client authenticated by a signed assertion."""
    try:
        key = keys.private_key(settings.key_id)
        alg = settings.signing_alg or keys.algorithm(settings.key_id)
    except (KeyStoreError, OSError, KeyError, ValueError) as exc:
        raise BackendError(
            f"Waiting for Handoff's backend key at {registration.name}: {exc}"
        ) from exc
    session = OAuth2Session(
        client_id=settings.client_id,
        scope=" ".join(settings.scopes),
        token_endpoint_auth_method=smart.SmartPrivateKeyJWT(key, settings.key_id, alg),
    )
    try:
        token = dict(session.fetch_token(token_endpoint, grant_type=GRANT_TYPE, timeout=timeout))
    except requests.RequestException as exc:
        raise BackendError(
            f"Waiting for {registration.name}: its token endpoint could not be reached "
            f"({exc.__class__.__name__})."
        ) from exc
    except Exception as exc:  # authlib's OAuthError carries the EHR's error and description
        said = smart.ehr_error(
            getattr(exc, "error", None) or exc.__class__.__name__,
            getattr(exc, "description", None),
        )
        raise BackendError(
            f"Waiting for {registration.name}: it refused Handoff's backend access ({said})."
        ) from exc
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        raise BackendError(f"Waiting for {registration.name}: its token response had no token.")
    return token


#: This process's backend tokens.
TOKENS = BackendTokens()


def client(
    registration: Registration,
    keys: KeyStore,
    timeout: tuple[float, float],
    force_refresh: bool = False,
    margin: tuple[float, float] = RENEW_MARGIN,
) -> FhirClient:
    """A FHIR client on the registration's EHR with Handoff's backend token."""
    token = TOKENS.access_token(registration, keys, timeout, force=force_refresh, margin=margin)
    return FhirClient(registration.iss, token, timeout)


def check(registration: Registration, keys: KeyStore, timeout: tuple[float, float]) -> str:
    """Ask the EHR for a fresh backend token (not kept, never shown) and say what it granted,
    for an integrator setting the registration up; BackendError says why not."""
    settings = registration.backend
    if settings is None:
        raise BackendError(f"{registration.id}: no backend: block (no backend access)")
    endpoint = TOKENS.token_endpoint(registration, timeout)
    token = request_token(registration, settings, endpoint, keys, timeout)
    granted = token.get("scope") or " ".join(settings.scopes)
    missing = sorted(set(settings.scopes) - set(granted.split()))
    said = f"{registration.id}: {settings.client_id} at {endpoint}: granted {granted}"
    said += f"; expires in {int(_lifetime(token))} s"
    return said + (f"; NOT granted: {' '.join(missing)}" if missing else "")
