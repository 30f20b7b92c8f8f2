"""The running sandbox's parts, shared by the auth and chart blueprints."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from authlib.integrations.flask_oauth2 import ResourceProtector
from flask import current_app

from smartapp.sandbox.auth.models import OAuthStore
from smartapp.sandbox.auth.server import SmartAuthorizationServer
from smartapp.sandbox.db import Database
from smartapp.sandbox.faults import Faults, RequestLog
from smartapp.sandbox.fhir.service import FhirService


@dataclass
class Sandbox:
    """Database, FHIR service, OAuth server and store of one sandbox app, and its test
    controls' state (faults and request log; served only when `test_controls`)."""

    base_url: str
    db: Database
    service: FhirService
    store: OAuthStore
    server: SmartAuthorizationServer
    protector: ResourceProtector
    fixed_now: datetime | None = None
    faults: Faults = field(default_factory=Faults)
    requests: RequestLog = field(default_factory=RequestLog)

    @property
    def fhir_base(self) -> str:
        """Absolute FHIR base URL."""
        return self.service.fhir_base

    def url(self, path: str) -> str:
        """Absolute URL on the sandbox origin."""
        return f"{self.base_url}{path}"

    def now(self) -> datetime:
        """Clinical "now": the fixed instant the data was shifted to, or the clock."""
        return self.fixed_now or datetime.now(UTC)


def sandbox() -> Sandbox:
    """The Sandbox of the current Flask app."""
    return current_app.extensions["sandbox"]
