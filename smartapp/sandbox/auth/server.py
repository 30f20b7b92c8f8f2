"""authlib wiring: the authorization server, its grants and extensions, the bearer validator.

Thin protocol objects over `OAuthStore`:
- authorization code grant with PKCE S256 required (no `plain`, no missing challenge),
- SMART launch checks on /authorize (`aud` is exactly the FHIR base, `launch` is live and
  belongs to the signed-in user) and launch context in the token response; a plain OpenID
  Connect sign-in (no launch and no FHIR resource scope, no `launch`) needs no `aud` and
  gets no launch context,
- OpenID Connect id_token (RS256; `fhirUser`, `name`, `handoff_roles` claims) when `openid`
  is granted,
- refresh tokens only for `online_access` / `offline_access`; refresh grant with rotation,
  keeping the launch context,
- client authentication: public (`none`), `client_secret_basic`, `private_key_jwt`
  (auth/client_auth.py),
- SMART Backend Services: the client_credentials grant with system/ scopes (auth/backend.py),
- the fault switches of faults.py that bend these rules for tests.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    grants,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey

from smartapp.sandbox.auth.backend import BACKEND_TOKEN_LIFETIME_S, SmartClientCredentialsGrant
from smartapp.sandbox.auth.backend import GRANT_TYPE as BACKEND_GRANT
from smartapp.sandbox.auth.client_auth import SmartPrivateKeyJWT
from smartapp.sandbox.auth.models import (
    USERS,
    AuthorizationCode,
    EhrUser,
    Launch,
    OAuthClient,
    OAuthStore,
    Token,
)
from smartapp.sandbox.auth.scopes import is_sign_in_only
from smartapp.sandbox.faults import Faults

ACCESS_TOKEN_LIFETIME_S = 3600
#: Advertised token endpoint auth methods (client_secret_post also works when registered).
ADVERTISED_AUTH_METHODS = ["private_key_jwt", "client_secret_basic", "none"]
CLIENT_AUTH_METHODS = ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"]
#: The scopes that earn a refresh token.
REFRESH_SCOPES = frozenset({"online_access", "offline_access"})
#: What the id_token faults put in place of the true values.
WRONG_AUD = "some-other-client"
WRONG_ISS = "https://wrong-issuer.example/fhir"


class SmartAuthorizationServer(AuthorizationServer):
    """authlib's Flask server bound to the sandbox store and FHIR base."""

    def __init__(
        self, store: OAuthStore, fhir_base: str, key: RSAKey, faults: Faults | None = None
    ) -> None:
        super().__init__()
        self.store = store
        self.fhir_base = fhir_base
        self.key = key
        self.faults = faults or Faults()

    def query_client(self, client_id: str) -> OAuthClient | None:
        return self.store.client(client_id)

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        source = request.authorization_code or request.refresh_token
        user = request.user
        self.store.save_token(
            token,
            request.client.client_id,
            user.id if user else None,
            getattr(source, "patient", None),
            getattr(source, "encounter", None),
        )

    def validate_requested_scope(self, scope: str) -> None:
        """Unsupported scopes are dropped (granted = requested ∩ supported), not refused."""
        return None


class SmartAuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """Code grant for public (PKCE) and confidential clients; codes carry launch context."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: SmartAuthorizationServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        context: dict = getattr(request, "smart_context", {}) or {}
        self.server.store.save_code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope or "",
            user_id=request.user.id,
            nonce=data.get("nonce"),
            challenge=data.get("code_challenge"),
            challenge_method=data.get("code_challenge_method"),
            patient=context.get("patient"),
            encounter=context.get("encounter"),
            launch_id=context.get("launch_id"),
        )

    def query_authorization_code(self, code: str, client: OAuthClient) -> AuthorizationCode | None:
        return self.server.store.code(code, client.client_id)

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.store.delete_code(authorization_code)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> EhrUser | None:
        return USERS.get(authorization_code.user_id)


class SmartRefreshTokenGrant(grants.RefreshTokenGrant):
    """Refresh with rotation: the old token is revoked, the context carried over."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: SmartAuthorizationServer

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        if self.server.faults.on("refuse_refresh"):
            raise InvalidGrantError("The refresh token is refused (sandbox fault refuse_refresh)")
        return self.server.store.token_by_refresh(refresh_token)

    def authenticate_user(self, refresh_token: Token) -> EhrUser | None:
        return USERS.get(refresh_token.user_id or "")

    def revoke_old_credential(self, refresh_token: Token) -> None:
        self.server.store.revoke(refresh_token)


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only, required on every authorization request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str | None) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class SmartLaunch:
    """Grant extension: SMART checks on /authorize, launch context in token responses."""

    def __init__(
        self, fhir_base: str, store: OAuthStore, style_url: str, faults: Faults | None = None
    ) -> None:
        self.fhir_base = fhir_base
        self.store = store
        self.style_url = style_url
        self.faults = faults or Faults()

    def __call__(self, grant: grants.BaseGrant) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.check_request)
        grant.register_hook("after_create_token_response", self.add_context)

    def check_request(self, grant: grants.BaseGrant, _result: object) -> None:
        """aud must be the FHIR base; a launch must be live and the signed-in user's.

        A sign-in that asks for no launch and no FHIR resource scope (plain OpenID Connect,
        e.g. `openid profile fhirUser`) reaches no FHIR server: `aud` may be left out, but
        when sent it must still be the FHIR base.
        """
        request = grant.request
        data = request.payload.data
        aud = data.get("aud")
        launch_id = data.get("launch")
        optional = not launch_id and is_sign_in_only(data.get("scope") or "")
        if aud != self.fhir_base and not (aud is None and optional):
            raise InvalidRequestError(
                f"'aud' must be this server's FHIR base URL {self.fhir_base} (got {aud!r})"
            )
        launch: Launch | None = None
        if launch_id:
            launch = self.store.launch(launch_id)
            if launch is None or not launch.usable():
                raise InvalidRequestError("'launch' is unknown, expired or already used")
            user = request.user
            if user is not None and user.id != launch.user_id:
                raise InvalidRequestError("'launch' belongs to another EHR user session")
        elif "launch" in scope_to_list(data.get("scope") or ""):
            raise InvalidRequestError("scope 'launch' needs a 'launch' parameter (EHR launch)")
        request.smart_launch = launch

    def add_context(self, grant: grants.BaseGrant, result: tuple) -> None:
        """patient, encounter, need_patient_banner, smart_style_url in the token response."""
        status, token, _headers = result
        if status != 200 or not isinstance(token, dict):
            return
        source = grant.request.authorization_code or grant.request.refresh_token
        if source is None:
            return
        if not source.patient and is_sign_in_only(source.scope or ""):
            return  # a plain sign-in: no launch, so no launch context at all
        if source.patient and not self.faults.on("omit_patient"):
            token["patient"] = source.patient
        if source.encounter:
            token["encounter"] = source.encounter
        token["need_patient_banner"] = True
        token["smart_style_url"] = self.style_url


class SmartOpenIDCode(OpenIDCode):
    """id_token signed RS256 with the sandbox key; `fhirUser` is an absolute URL.

    The id_token faults make it wrong in one way each: signed by a key outside the JWKS
    (same kid), another aud, another iss, exp in the past, another nonce.
    """

    def __init__(
        self, fhir_base: str, store: OAuthStore, key: RSAKey, faults: Faults | None = None
    ) -> None:
        super().__init__(require_nonce=False)
        self.fhir_base = fhir_base
        self.store = store
        self.key = key
        self.faults = faults or Faults()
        self._rogue_key: RSAKey | None = None
        self._rogue_lock = threading.Lock()

    def rogue_key(self) -> RSAKey:
        """A signing key that is not in the JWKS (made on first use)."""
        with self._rogue_lock:
            if self._rogue_key is None:
                self._rogue_key = RSAKey.generate_key(2048, private=True)
            return self._rogue_key

    def resolve_client_private_key(self, client: OAuthClient) -> RSAKey:
        if self.faults.on("id_token_bad_signature"):
            return self.rogue_key()
        return self.key

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return "RS256"

    def get_client_claims(self, client: OAuthClient) -> dict:
        claims: dict = {"iss": self.fhir_base, "aud": client.get_client_id()}
        if self.faults.on("id_token_wrong_iss"):
            claims["iss"] = WRONG_ISS
        if self.faults.on("id_token_wrong_aud"):
            claims["aud"] = WRONG_AUD
        if self.faults.on("id_token_expired"):
            now = int(time.time())
            claims.update(iat=now - 7200, exp=now - 3600, auth_time=now - 7200)
        return claims

    def get_authorization_code_claims(self, authorization_code: AuthorizationCode) -> dict:
        claims = super().get_authorization_code_claims(authorization_code)
        if self.faults.on("id_token_wrong_nonce"):
            claims["nonce"] = f"not-your-nonce-{secrets.token_urlsafe(8)}"
        elif self.faults.on("id_token_expired") and "auth_time" in claims:
            claims["auth_time"] = min(claims["auth_time"], int(time.time()) - 7200)
        return claims

    def get_encode_header(self, client: OAuthClient) -> dict:
        return {"alg": "RS256", "kid": self.key.thumbprint(), "typ": "JWT"}

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return self.store.nonce_used(request.payload.client_id, nonce)

    def generate_user_info(self, user: EhrUser, scope: str) -> UserInfo:
        return user_claims(user, self.fhir_base)


def user_claims(user: EhrUser, fhir_base: str) -> UserInfo:
    """What the id_token (and /auth/userinfo) says about `user`: `sub`, `name`, `fhirUser`
    (absolute URL of the user's Practitioner) and `handoff_roles` (the hospital's roles for
    Handoff's staff pages: coach, auditor, program-manager; physician)."""
    return UserInfo(
        sub=user.id,
        fhirUser=f"{fhir_base}/{user.fhir_user}",
        name=user.name,
        handoff_roles=list(user.roles),
    )


class SmartBearerValidator(BearerTokenValidator):
    """Looks the bearer token up in the store; expiry and revocation checked by authlib."""

    def __init__(self, store: OAuthStore, realm: str) -> None:
        super().__init__(realm=realm)
        self.store = store

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.store.token_by_access(token_string)


#: authlib loggers whose debug lines print issued tokens ("Issue token {...} to client").
_TOKEN_LOGGERS = (
    "authlib.oauth2.rfc6749.grants.authorization_code",
    "authlib.oauth2.rfc6749.grants.refresh_token",
    "authlib.oauth2.rfc6749.grants.client_credentials",
)
_SECRET_FIELDS = ("access_token", "refresh_token", "id_token")


class RedactTokens(logging.Filter):
    """Masks token values in authlib's log records: an EHR never logs credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, dict) for a in record.args):
            record.args = tuple(
                {k: ("<redacted>" if k in _SECRET_FIELDS else v) for k, v in arg.items()}
                if isinstance(arg, dict)
                else arg
                for arg in record.args
            )
        return True


def redact_token_logs() -> None:
    """Install RedactTokens on authlib's token-issuing loggers (once per process)."""
    for name in _TOKEN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


class SmartTokenGenerator(BearerTokenGenerator):
    """Opaque bearer tokens; the grant and lifetime bent by the faults when set. Backend
    services tokens (client_credentials) live `backend_lifetime`, whatever the faults say of
    launch tokens."""

    def __init__(
        self,
        faults: Faults,
        lifetime: Callable[[], int],
        backend_lifetime: Callable[[], int] = lambda: BACKEND_TOKEN_LIFETIME_S,
    ) -> None:
        super().__init__(
            access_token_generator=lambda **_: generate_token(42),
            refresh_token_generator=lambda **_: generate_token(48),
            expires_generator=lambda client, grant_type: (
                backend_lifetime()
                if grant_type == BACKEND_GRANT
                else faults.get("access_token_lifetime") or lifetime()
            ),
        )
        self.faults = faults

    def generate(
        self,
        grant_type: str,
        client: OAuthClient,
        user: EhrUser | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict:
        """A refresh token only where the grant has `online_access` or `offline_access`, as
        SMART App Launch says (an app that asks neither gets none)."""
        if grant_type == BACKEND_GRANT:
            return self.backend_token(client, scope or "", expires_in)
        granted = set(scope_to_list(self.get_allowed_scope(client, scope or "")) or [])
        lasting = bool(granted & REFRESH_SCOPES)
        return super().generate(
            grant_type, client, user, scope, expires_in, include_refresh_token and lasting
        )

    def backend_token(self, client: OAuthClient, scope: str, expires_in: int | None) -> dict:
        """A backend services token: `scope` was checked against the client's registration
        by the grant (auth/backend.py); narrowed by the scope faults; no refresh token."""
        token = {
            "token_type": "Bearer",
            "access_token": self.access_token_generator(),
            "expires_in": expires_in or self._get_expires_in(client, BACKEND_GRANT),
        }
        granted = self.faults.narrow_grant(scope)
        if granted:
            token["scope"] = granted
        return token

    def get_allowed_scope(self, client: OAuthClient, scope: str) -> str:
        """Requested ∩ supported, then narrowed by narrow_scopes / drop_write_scopes /
        advertise_v1_only: the token response's `scope` is what is really granted."""
        return self.faults.narrow_grant(BearerTokenGenerator.get_allowed_scope(client, scope))


def create_authorization_server(
    store: OAuthStore,
    fhir_base: str,
    key: RSAKey,
    style_url: str,
    lifetime: Callable[[], int],
    token_url: str,
    faults: Faults | None = None,
    backend_lifetime: Callable[[], int] = lambda: BACKEND_TOKEN_LIFETIME_S,
) -> SmartAuthorizationServer:
    """The configured authlib server: grants, extensions, client auth and token generator.

    `token_url` (the token endpoint's absolute URL) is the audience private_key_jwt client
    assertions must name. `lifetime` is the launch tokens' lifetime, `backend_lifetime` the
    backend services tokens' (seconds).
    """
    redact_token_logs()
    faults = faults or Faults()
    server = SmartAuthorizationServer(store, fhir_base, key, faults)
    server.register_token_generator(
        "default", SmartTokenGenerator(faults, lifetime, backend_lifetime)
    )
    server.register_client_auth_method("private_key_jwt", SmartPrivateKeyJWT(token_url))
    launch = SmartLaunch(fhir_base, store, style_url, faults)
    server.register_grant(
        SmartAuthorizationCodeGrant,
        [
            S256CodeChallenge(required=True),
            SmartOpenIDCode(fhir_base, store, key, faults),
            launch,
        ],
    )
    server.register_grant(SmartRefreshTokenGrant, [launch])
    server.register_grant(SmartClientCredentialsGrant)
    return server


def create_resource_protector(store: OAuthStore, realm: str) -> ResourceProtector:
    """The bearer-token guard of the FHIR API."""
    protector = ResourceProtector()
    protector.register_token_validator(SmartBearerValidator(store, realm))
    return protector
