"""Sandbox configuration objects and fixed demo identities."""

from __future__ import annotations

from dataclasses import dataclass, field

DEMO_PHYSICIAN_ID = "demo-ed-physician"
DEMO_PHYSICIAN_NAME = "Avery Demo, MD"
HOSPITAL_ORG_ID = "sandbox-hospital"
COACH_TEAM_ORG_ID = "peer-recovery-coach-team"

#: Token endpoint authentication methods a registered client may use.
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")


@dataclass
class SandboxClient:
    """A SMART app registered with the sandbox.

    `auth_method` is how it authenticates at the token endpoint:
    - "none": public client (PKCE only),
    - "client_secret_basic" (or "client_secret_post"): symmetric, needs `client_secret`,
    - "private_key_jwt": asymmetric (SMART client-confidential-asymmetric), needs its public
      keys: `jwks_uri` (fetched on every token request, so key rotation works) and/or an
      inline `jwks` ({"keys": [...]}).
    """

    client_id: str
    redirect_uris: list[str]
    launch_url: str
    name: str = "Handoff"
    auth_method: str = "none"
    client_secret: str | None = field(default=None, repr=False)
    jwks_uri: str | None = None
    jwks: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.auth_method not in AUTH_METHODS:
            raise ValueError(
                f"client {self.client_id}: auth_method must be one of {', '.join(AUTH_METHODS)}"
            )
        if self.auth_method.startswith("client_secret") and not self.client_secret:
            raise ValueError(f"client {self.client_id}: {self.auth_method} needs client_secret")
        if self.auth_method == "private_key_jwt":
            if not (self.jwks_uri or self.jwks):
                raise ValueError(f"client {self.client_id}: private_key_jwt needs jwks_uri or jwks")
            if self.jwks is not None and not isinstance(self.jwks.get("keys"), list):
                raise ValueError(f"client {self.client_id}: jwks must be {{'keys': [...]}}")
