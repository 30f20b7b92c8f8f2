"""SMART App Launch client: discovery, authorization request, token exchange, id_token check.

Protocol work is authlib's (OAuth2Session with PKCE) and joserfc's (JWT); this module only
wires them to SMART's conventions. No Flask here: the launch blueprint calls these functions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from smartapp.registrations import Registration


class LaunchError(Exception):
    """A launch cannot go on; the message is safe to show (no tokens, no PHI)."""


@dataclass(frozen=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None
    issuer: str | None
    capabilities: tuple[str, ...]
    code_challenge_methods: tuple[str, ...]


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    code_verifier: str
    nonce: str


def discover(iss: str, timeout: tuple[float, float]) -> SmartConfiguration:
    """Read `{iss}/.well-known/smart-configuration`."""
    url = f"{iss}/.well-known/smart-configuration"
    try:
        response = requests.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        raise LaunchError(
            f"The EHR's SMART configuration could not be reached ({exc.__class__.__name__})."
        ) from exc
    if response.status_code != 200:
        raise LaunchError(f"The EHR's SMART configuration answered HTTP {response.status_code}.")
    try:
        data = response.json()
        return SmartConfiguration(
            authorization_endpoint=data["authorization_endpoint"],
            token_endpoint=data["token_endpoint"],
            jwks_uri=data.get("jwks_uri"),
            issuer=data.get("issuer"),
            capabilities=tuple(data.get("capabilities", [])),
            code_challenge_methods=tuple(data.get("code_challenge_methods_supported", [])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LaunchError(
            "The EHR's SMART configuration is not valid JSON with the required endpoints."
        ) from exc


def _session(
    registration: Registration, redirect_uri: str, scope: str | None = None
) -> OAuth2Session:
    return OAuth2Session(
        client_id=registration.client_id,
        scope=scope if scope is not None else " ".join(registration.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )


def authorization_request(
    registration: Registration,
    config: SmartConfiguration,
    redirect_uri: str,
    launch: str | None,
) -> AuthorizationRequest:
    """Build the authorize URL with PKCE S256, a 256-bit state, a nonce and `aud` = iss."""
    if config.code_challenge_methods and "S256" not in config.code_challenge_methods:
        raise LaunchError("The EHR does not support PKCE S256; Handoff will not launch without it.")
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    code_verifier = generate_token(64)
    extra = {"aud": registration.iss, "nonce": nonce}
    if launch:
        extra["launch"] = launch
    url, _ = _session(registration, redirect_uri).create_authorization_url(
        config.authorization_endpoint, state=state, code_verifier=code_verifier, **extra
    )
    return AuthorizationRequest(url=url, state=state, code_verifier=code_verifier, nonce=nonce)


def exchange_code(
    registration: Registration,
    token_endpoint: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    timeout: tuple[float, float],
) -> dict:
    """Trade the authorization code for tokens (PKCE verifier sent)."""
    session = _session(registration, redirect_uri)
    try:
        return dict(
            session.fetch_token(
                token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                timeout=timeout,
            )
        )
    except requests.RequestException as exc:
        raise LaunchError(
            f"The EHR's token endpoint could not be reached ({exc.__class__.__name__})."
        ) from exc
    except Exception as exc:  # authlib raises OAuthError subclasses with the server's error code
        error = getattr(exc, "error", None) or exc.__class__.__name__
        raise LaunchError(f"The EHR refused the token request ({error}).") from exc


def refresh(
    registration: Registration,
    token_endpoint: str,
    refresh_token: str,
    timeout: tuple[float, float],
) -> dict:
    """Use the refresh token for a new access token."""
    session = _session(registration, redirect_uri="", scope=None)
    try:
        return dict(
            session.refresh_token(token_endpoint, refresh_token=refresh_token, timeout=timeout)
        )
    except Exception as exc:
        error = getattr(exc, "error", None) or exc.__class__.__name__
        raise LaunchError(f"The EHR refused to refresh the session ({error}).") from exc


def verify_id_token(
    id_token: str,
    jwks_uri: str,
    issuer: str,
    client_id: str,
    nonce: str,
    timeout: tuple[float, float],
) -> dict:
    """Check the id_token's signature (issuer's JWKS), iss, aud, exp and nonce; return claims."""
    try:
        keys = KeySet.import_key_set(requests.get(jwks_uri, timeout=timeout).json())
        token = jwt.decode(id_token, keys, algorithms=["RS256", "RS384", "ES256", "ES384"])
    except (JoseError, requests.RequestException, ValueError) as exc:
        raise LaunchError(
            f"The EHR's identity token could not be verified ({exc.__class__.__name__})."
        ) from exc
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(token.claims)
    except JoseError as exc:
        raise LaunchError(
            f"The EHR's identity token is not valid for this launch ({exc.error})."
        ) from exc
    return dict(token.claims)


def fhir_user_reference(fhir_user: str | None, iss: str) -> str | None:
    """`fhirUser` may be absolute or relative to the FHIR base; return `Type/id`."""
    if not fhir_user:
        return None
    if fhir_user.startswith(iss + "/"):
        return fhir_user[len(iss) + 1 :]
    parts = fhir_user.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else fhir_user
