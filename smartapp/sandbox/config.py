"""Sandbox configuration objects and fixed demo identities."""

from __future__ import annotations

from dataclasses import dataclass, field

DEMO_PHYSICIAN_ID = "demo-ed-physician"
DEMO_PHYSICIAN_NAME = "Avery Demo, MD"
HOSPITAL_ORG_ID = "sandbox-hospital"
COACH_TEAM_ORG_ID = "peer-recovery-coach-team"


@dataclass
class SandboxClient:
    """A SMART app registered with the sandbox (public client unless a secret is given)."""

    client_id: str
    redirect_uris: list[str]
    launch_url: str
    name: str = "Handoff"
    auth_method: str = "none"
    client_secret: str | None = field(default=None, repr=False)
