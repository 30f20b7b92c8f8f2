"""Sandbox configuration objects and fixed demo identities."""

from __future__ import annotations

from dataclasses import dataclass, field

DEMO_PHYSICIAN_ID = "demo-ed-physician"
DEMO_PHYSICIAN_NAME = "Avery Demo, MD"
HOSPITAL_ORG_ID = "sandbox-hospital"
COACH_TEAM_ORG_ID = "peer-recovery-coach-team"
#: The staff client `python -m smartapp.sandbox` registers, and its demo secret (README).
STAFF_CLIENT_ID = "handoff-staff"
DEMO_STAFF_CLIENT_SECRET = "handoff-staff-demo-secret"
#: Environment variable both Handoff and the sandbox CLI read the staff client secret from.
STAFF_CLIENT_SECRET_ENV = "HANDOFF_STAFF_CLIENT_SECRET"


@dataclass(frozen=True)
class DemoUser:
    """A person who can sign in to the sandbox EHR, with a seeded Practitioner of the same id.

    `roles` go into the id_token claim `handoff_roles` (the hospital IdP's role claim for
    Handoff's staff pages).
    """

    id: str
    name: str
    roles: tuple[str, ...]
    family: str
    given: tuple[str, ...]
    suffix: tuple[str, ...] = ()
    qualification: str | None = None
    npi: str | None = None

    def practitioner(self) -> dict:
        """The FHIR Practitioner resource `fhirUser` points at."""
        human: dict = {"use": "official", "text": self.name, "family": self.family}
        human["given"] = list(self.given)
        if self.suffix:
            human["suffix"] = list(self.suffix)
        resource: dict = {"resourceType": "Practitioner", "id": self.id, "active": True}
        if self.npi:
            resource["identifier"] = [
                {"system": "http://hl7.org/fhir/sid/us-npi", "value": self.npi}
            ]
        resource["name"] = [human]
        if self.qualification:
            resource["qualification"] = [{"code": {"text": self.qualification}}]
        return resource


#: Everyone the sign-in page offers, the demo ED physician first (the default user).
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser(
        DEMO_PHYSICIAN_ID,
        DEMO_PHYSICIAN_NAME,
        ("physician",),
        "Demo",
        ("Avery",),
        ("MD",),
        qualification="Emergency Medicine",
        npi="9999999991",
    ),
    DemoUser(
        "demo-coach-1",
        "Jordan Rivera, CPRS",
        ("coach",),
        "Rivera",
        ("Jordan",),
        ("CPRS",),
        qualification="Certified Peer Recovery Specialist",
    ),
    DemoUser(
        "demo-coach-2",
        "Sam Lee, CPRS",
        ("coach",),
        "Lee",
        ("Sam",),
        ("CPRS",),
        qualification="Certified Peer Recovery Specialist",
    ),
    DemoUser("demo-auditor", "Morgan Ellis", ("auditor",), "Ellis", ("Morgan",)),
    DemoUser("demo-program-manager", "Pat Quinn", ("program-manager",), "Quinn", ("Pat",)),
    DemoUser("demo-supervisor", "Casey Morgan, LCSW", ("supervisor",), "Morgan", ("Casey",)),
    DemoUser("demo-partner", "Robin Hale", ("partner",), "Hale", ("Robin",)),
)

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
    `backend_scopes`: the `system/` scopes a SMART Backend Services client (client_credentials
    grant, private_key_jwt only) is registered for; empty: no backend access.
    """

    client_id: str
    redirect_uris: list[str]
    launch_url: str
    name: str = "Handoff"
    auth_method: str = "none"
    client_secret: str | None = field(default=None, repr=False)
    jwks_uri: str | None = None
    jwks: dict | None = field(default=None, repr=False)
    backend_scopes: list[str] = field(default_factory=list)

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
        if self.backend_scopes and self.auth_method != "private_key_jwt":
            raise ValueError(f"client {self.client_id}: backend access needs private_key_jwt")
        wrong = [s for s in self.backend_scopes if not s.startswith("system/")]
        if wrong:
            raise ValueError(f"client {self.client_id}: backend scopes must be system/: {wrong}")
