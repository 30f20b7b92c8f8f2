"""SMART App Launch client: discovery, authorization request, token exchange, id_token check.

Protocol work is authlib's (OAuth2Session with PKCE) and joserfc's (JWT); this module only
wires them to SMART's conventions. No Flask here: the launch blueprint calls these functions.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from smartapp.fhir.http import adopt, session_for
from smartapp.launch.registrations import Registration
from smartapp.web.jws import JwksCache, unverified


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
    scopes_supported: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    code_verifier: str
    nonce: str


OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


#: How much of an EHR's error description is kept (shown and logged).
EHR_ERROR_MAX_CHARS = 300
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def ehr_error(error: str | None, description: str | None = None) -> str:
    """What the EHR said when it refused (OAuth `error` and `error_description`), as one line
    safe for a log (no control characters, so no forged lines) and bounded in length. The page
    escapes it like any text."""

    def clean(text: str | None) -> str:
        return " ".join(_CONTROL_CHARS.sub(" ", text or "").split())[:EHR_ERROR_MAX_CHARS]

    code, said = clean(error) or "error", clean(description)
    return f"{code}: {said}" if said else code


def _oauth_error(exc: Exception) -> str:
    """authlib's OAuthError carries the server's `error` and `error_description`."""
    return ehr_error(
        getattr(exc, "error", None) or exc.__class__.__name__, getattr(exc, "description", None)
    )


def _get_json(url: str, timeout: tuple[float, float]) -> dict | None:
    """GET a JSON document; None when it is absent or not JSON."""
    try:
        response = session_for(url).get(
            url, headers={"Accept": "application/json"}, timeout=timeout
        )
    except requests.RequestException as exc:
        raise LaunchError(
            f"The EHR could not be reached ({exc.__class__.__name__}). Try again in a moment."
        ) from exc
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def discover(iss: str, timeout: tuple[float, float]) -> SmartConfiguration:
    """`{iss}/.well-known/smart-configuration`, else the CapabilityStatement's oauth-uris."""
    data = _get_json(f"{iss}/.well-known/smart-configuration", timeout)
    if data and data.get("authorization_endpoint") and data.get("token_endpoint"):
        jwks_uri = data.get("jwks_uri") or _openid_jwks(data.get("issuer") or iss, timeout)
        return SmartConfiguration(
            authorization_endpoint=data["authorization_endpoint"],
            token_endpoint=data["token_endpoint"],
            jwks_uri=jwks_uri,
            issuer=data.get("issuer"),
            capabilities=tuple(data.get("capabilities", [])),
            code_challenge_methods=tuple(data.get("code_challenge_methods_supported", [])),
            scopes_supported=tuple(data.get("scopes_supported", [])),
        )
    metadata = _get_json(f"{iss}/metadata", timeout)
    uris = _oauth_uris(metadata or {})
    if not uris.get("authorize") or not uris.get("token"):
        raise LaunchError(
            "The EHR publishes no SMART configuration (neither .well-known/smart-configuration "
            "nor OAuth URIs in its CapabilityStatement)."
        )
    return SmartConfiguration(
        authorization_endpoint=uris["authorize"],
        token_endpoint=uris["token"],
        jwks_uri=_openid_jwks(iss, timeout),
        issuer=None,
        capabilities=(),
        code_challenge_methods=(),
    )


def _oauth_uris(metadata: dict) -> dict[str, str]:
    for rest in metadata.get("rest", []):
        for extension in rest.get("security", {}).get("extension", []):
            if extension.get("url") == OAUTH_URIS:
                return {e.get("url"): e.get("valueUri") for e in extension.get("extension", [])}
    return {}


def _openid_jwks(issuer: str, timeout: tuple[float, float]) -> str | None:
    data = _get_json(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout)
    return (data or {}).get("jwks_uri")


def requested_scopes(
    registration: Registration, config: SmartConfiguration, standalone: bool
) -> str:
    """The registration's scopes and its `extra_scopes`, as v1 where the EHR does not advertise
    SMART v2; a standalone launch asks the EHR to pick the patient (and encounter) instead of
    `launch`. `online_access` is asked where the EHR advertises it, for a refresh token that
    keeps the session alive while the user is (short-lived access tokens would end it)."""
    from smartapp.writeback.profiles import profile

    write_profile = profile(registration.write.profile)
    scopes = (
        list(registration.scopes)
        + list(registration.extra_scopes)
        # create, and search by identifier; read and update the Task and the ServiceRequest
        # (the lifecycle's versioned PUTs): writeback.profiles.WriteProfile.scopes
        + write_profile.scopes("patient")
    )
    advertised = set(config.capabilities) | set(config.scopes_supported)
    if advertised & {"permission-online", "online_access"} and not set(scopes) & {
        "online_access",
        "offline_access",
    }:
        scopes.append("online_access")
    scopes = merge_scopes(scopes)
    if standalone:
        scopes = [s for s in scopes if s != "launch"] + ["launch/patient", "launch/encounter"]
    if "permission-v2" not in config.capabilities:
        scopes = [v1 for scope in scopes for v1 in to_v1(scope)]
    return " ".join(dict.fromkeys(scopes))


def merge_scopes(scopes: list[str]) -> list[str]:
    """One v2 scope per context and type: `patient/X.rs` + `patient/X.cs` -> `patient/X.crs`."""
    merged: dict[str, set[str]] = {}
    order: list[str] = []
    for scope in scopes:
        head, _, letters = scope.rpartition(".")
        if "/" not in head or "?" in letters or not set(letters) <= set("cruds"):
            key, letters = scope, ""
        else:
            key = head
        if key not in merged:
            merged[key] = set()
            order.append(key)
        merged[key] |= set(letters)
    return [
        k + ("." + "".join(c for c in "cruds" if c in merged[k]) if merged[k] else "")
        for k in order
    ]


def to_v1(scope: str) -> list[str]:
    """`patient/Condition.rs` -> `patient/Condition.read`; `.crs` -> read and write."""
    if "/" not in scope or "." not in scope or scope.startswith("launch"):
        return [scope]
    head, letters = scope.rsplit(".", 1)
    letters = letters.split("?", 1)[0]
    if letters in ("read", "write", "*"):
        return [scope]
    out = []
    if set(letters) & set("rs"):
        out.append(f"{head}.read")
    if set(letters) & set("cud"):
        out.append(f"{head}.write")
    return out


@functools.lru_cache(maxsize=4096)
def may(granted: str, resource_type: str, action: str) -> bool:
    """Whether granted scopes allow `action` ('r', 's', 'c', ...) on a type, for the patient
    or the user, in v1 or v2 form. Remembered: a launch's scopes are asked about each type
    the chart read, the screen and Sign touch (about twenty times a flow)."""
    for scope in granted.split():
        if "/" not in scope or "." not in scope:
            continue
        context, rest = scope.split("/", 1)
        if context not in ("patient", "user"):
            continue
        type_, letters = rest.rsplit(".", 1)
        letters = letters.split("?", 1)[0]
        if type_ not in (resource_type, "*"):
            continue
        allowed = {"read": "rs", "write": "cud", "*": "cruds"}.get(letters, letters)
        if action in allowed:
            return True
    return False


class SmartPrivateKeyJWT(PrivateKeyJWT):
    """authlib's private_key_jwt with SMART's rules: kid in the header, RS384 or ES384, and an
    assertion that expires within 5 minutes (authlib's default is an hour); fresh jti each."""

    def __init__(self, key, kid: str, alg: str) -> None:
        super().__init__(alg=alg)
        self._key = key
        self._kid = kid

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            self._key,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            header={"kid": self._kid, "typ": "JWT"},
            expires_in=ASSERTION_LIFETIME_SECONDS,
        )


ASSERTION_LIFETIME_SECONDS = 300


def _session(
    registration: Registration,
    redirect_uri: str,
    scope: str | None = None,
    signing_key=None,
) -> OAuth2Session:
    """An authlib session that authenticates to the token endpoint as registered."""
    kwargs: dict = {}
    if registration.auth_method == "client_secret_basic":
        kwargs = {
            "client_secret": registration.client_secret(),
            "token_endpoint_auth_method": "client_secret_basic",
        }
    elif registration.auth_method == "private_key_jwt":
        if signing_key is None or registration.key_id is None:  # key_id: checked at loading
            raise LaunchError(f"No signing key for registration {registration.id}.")
        kwargs = {
            "token_endpoint_auth_method": SmartPrivateKeyJWT(
                signing_key, registration.key_id, registration.signing_alg
            )
        }
    else:
        kwargs = {"token_endpoint_auth_method": "none"}
    return OAuth2Session(
        client_id=registration.client_id,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        **kwargs,
    )


def authorization_request(
    registration: Registration,
    config: SmartConfiguration,
    redirect_uri: str,
    launch: str | None,
) -> AuthorizationRequest:
    """The authorize URL with PKCE S256, a 256-bit state, a nonce and `aud` = iss.
    Without `launch` it is a standalone launch: the EHR asks the user for the patient."""
    if config.code_challenge_methods and "S256" not in config.code_challenge_methods:
        raise LaunchError("The EHR does not support PKCE S256; Handoff will not launch without it.")
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    # 64 characters of RFC 7636's unreserved set (384 random bits) from one read of the
    # system's random source (authlib's generate_token draws each character apart: 170 us).
    code_verifier = secrets.token_urlsafe(48)
    extra = {"aud": registration.iss, "nonce": nonce}
    if launch:
        extra["launch"] = launch
    # authlib's authorization URL, as its OAuth2Session.create_authorization_url builds it,
    # without a requests session made (and dropped) per launch to build a URL.
    url = prepare_grant_uri(
        config.authorization_endpoint,
        client_id=registration.client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=requested_scopes(registration, config, standalone=not launch),
        state=state,
        code_challenge=create_s256_code_challenge(code_verifier),
        code_challenge_method="S256",
        **extra,
    )
    return AuthorizationRequest(url=url, state=state, code_verifier=code_verifier, nonce=nonce)


def exchange_code(
    registration: Registration,
    token_endpoint: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    timeout: tuple[float, float],
    signing_key=None,
) -> dict:
    """Trade the authorization code for tokens (PKCE verifier sent, client authenticated)."""
    session = adopt(_session(registration, redirect_uri, signing_key=signing_key), token_endpoint)
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
    except LaunchError:
        raise
    except Exception as exc:  # authlib raises OAuthError subclasses with the server's error code
        raise LaunchError(f"The EHR refused the token request ({_oauth_error(exc)}).") from exc


def refresh(
    registration: Registration,
    token_endpoint: str,
    refresh_token: str,
    timeout: tuple[float, float],
    signing_key=None,
) -> dict:
    """Use the refresh token for a new access token."""
    session = adopt(
        _session(registration, redirect_uri="", signing_key=signing_key), token_endpoint
    )
    try:
        return dict(
            session.refresh_token(token_endpoint, refresh_token=refresh_token, timeout=timeout)
        )
    except Exception as exc:
        raise LaunchError(f"The EHR refused to refresh the session ({_oauth_error(exc)}).") from exc


@dataclass
class EhrDocuments:
    """The EHRs' published documents, kept `ttl` seconds (SMART_DISCOVERY_CACHE_SECONDS) as
    HTTP caches keep them, instead of fetched on every launch: each EHR's SMART configuration
    (an EHR that changes it is seen within `ttl`) and the key sets its identity tokens are
    signed with (`web.jws.JwksCache`: a kid not in the kept set fetches it again, at most every
    `refetch_after` seconds: a key rotation is seen at once). `ttl` 0 keeps nothing."""

    ttl: float = 300.0
    refetch_after: float = 30.0
    _configs: dict[str, tuple[float, SmartConfiguration]] = field(default_factory=dict)
    _key_sets: JwksCache = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._key_sets = JwksCache(ttl=self.ttl, refetch_after=self.refetch_after)

    def configuration(self, iss: str, timeout: tuple[float, float]) -> SmartConfiguration:
        now = time.monotonic()
        with self._lock:
            found = self._configs.get(iss)
        if found is not None and now - found[0] < self.ttl:
            return found[1]
        config = discover(iss, timeout)
        if self.ttl > 0:
            with self._lock:
                self._configs[iss] = (now, config)
        return config

    def key_set(self, jwks_uri: str, kid: str | None, timeout: tuple[float, float]) -> dict:
        return self._key_sets.keys(jwks_uri, kid, lambda url: fetch_key_set(url, timeout))


def fetch_key_set(jwks_uri: str, timeout: tuple[float, float]) -> dict:
    """The EHR's JWK Set (LaunchError when it cannot be read)."""
    try:
        document = session_for(jwks_uri).get(jwks_uri, timeout=timeout).json()
    except (requests.RequestException, ValueError) as exc:
        raise LaunchError(
            f"The EHR's identity token could not be verified ({exc.__class__.__name__})."
        ) from exc
    if not isinstance(document, dict):
        raise LaunchError("The EHR's identity token could not be verified (no key set).")
    return document


def id_token_kid(id_token: str) -> str | None:
    """The `kid` of an identity token's header (which kept key set to use), if any."""
    try:
        header, _ = unverified(id_token)
    except ValueError:
        return None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


_IMPORTED_MAX = 16
_imported_sets: dict[int, tuple[dict, KeySet]] = {}
_imported_lock = threading.Lock()


def _imported(key_set: dict) -> KeySet:
    """The JWK Set `key_set` imported (its keys parsed) once while it is the one kept:
    EhrDocuments answers with the same document until it fetches the set again, and parsing
    the keys was a visible part of every launch. Keyed by the document itself (the entry holds
    it, so its id cannot be reused meanwhile); a few are kept, the oldest dropped first."""
    with _imported_lock:
        found = _imported_sets.get(id(key_set))
    if found is not None and found[0] is key_set:
        return found[1]
    keys = KeySet.import_key_set(key_set)  # type: ignore[arg-type]
    with _imported_lock:
        if len(_imported_sets) >= _IMPORTED_MAX:
            _imported_sets.pop(next(iter(_imported_sets)))
        _imported_sets[id(key_set)] = (key_set, keys)
    return keys


def verify_id_token(
    id_token: str,
    key_set: dict,
    issuer: str,
    client_id: str,
    nonce: str,
) -> dict:
    """Check the id_token's signature (the issuer's JWK Set `key_set`), iss, aud, exp and
    nonce; return claims."""
    try:
        keys = _imported(key_set)
        token = jwt.decode(id_token, keys, algorithms=["RS256", "RS384", "ES256", "ES384"])
    except (JoseError, ValueError, TypeError) as exc:
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
