"""SMART Backend Services on the sandbox: the client_credentials grant (authlib).

For writes no user is present for (Handoff's outbox after the physician's launch ended, a
coach's or a community partner's update), as hl7.org/fhir/smart-app-launch/backend-services
describes:
- the client authenticates with `private_key_jwt` only (auth/client_auth.py: RS384/ES384, its
  JWKS by URL or by value, `kid` found and not revoked, `aud` = the token endpoint, `exp` at
  most 5 minutes ahead, `jti` never seen before); a revoked client is refused;
- the client must be registered for the grant and asks `system/` scopes only, each within
  what it was registered for; anything else is `invalid_scope` naming the scope;
- the token carries no refresh token, no user and no patient; its lifetime is the backend
  lifetime (SANDBOX_BACKEND_TOKEN_LIFETIME, 300 s by default as the guide recommends), apart
  from the launch tokens' (`access_token_lifetime` fault) so a test can make a launch token
  expire while the backend token lives on.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidScopeError,
    UnauthorizedClientError,
    scope_to_list,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant

from smartapp.sandbox.auth.scopes import system_scope_covered

GRANT_TYPE = "client_credentials"
BACKEND_TOKEN_LIFETIME_S = 300


def backend_scope(requested: str | None, registered: list[str]) -> str:
    """The scope to grant: every requested scope, each a system/ scope the client is
    registered for (order kept, duplicates dropped); InvalidScopeError names the first that
    is not."""
    wanted = list(dict.fromkeys(scope_to_list(requested or "") or []))
    if not wanted:
        raise InvalidScopeError(description="scope is required: the system/ scopes to grant")
    for scope in wanted:
        if not scope.startswith("system/"):
            raise InvalidScopeError(
                description=f"{scope!r} cannot be granted to a backend service: system/ only"
            )
        if not system_scope_covered(scope, registered):
            raise InvalidScopeError(description=f"{scope!r} is not registered for this client")
    return " ".join(wanted)


class SmartClientCredentialsGrant(ClientCredentialsGrant):
    """client_credentials for SMART Backend Services (private_key_jwt, system/ scopes)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    def validate_token_request(self) -> None:
        try:
            client = self.authenticate_token_endpoint_client()
        except InvalidClientError as error:
            error.status_code = 401  # authlib answers 400 when no method fits
            raise
        if not client.check_grant_type(GRANT_TYPE) or not client.backend_scopes:
            raise UnauthorizedClientError(
                description=f"The client {client.client_id} is not registered for backend "
                "services (client_credentials)"
            )
        self.request.client = client
        self.request.backend_scope = backend_scope(
            self.request.payload.scope, client.backend_scopes
        )

    def create_token_response(self) -> tuple[int, dict, list]:
        token = self.generate_token(
            scope=self.request.backend_scope, grant_type=GRANT_TYPE, include_refresh_token=False
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
