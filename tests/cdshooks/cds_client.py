"""A CDS client written for the tests, as an EHR would be: it signs an ES384 JWT with its own
key for every call (aud = the exact service URL, a fresh jti), prefetches with the service's
own templates from a FHIR server, sends hook requests and feedback, and applies an accepted
suggestion's actions to its FHIR server (the order cart). Every body it sends and receives is
checked against the CDS Hooks 2.0 models (smartapp.cdshooks.models)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey

from smartapp.cdshooks.models import DiscoveryResponse, Feedback, HookRequest, HookResponse

PATIENT_VIEW = "handoff-patient-view"


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": kid, "alg": "ES384", "use": "sig"})


def trust(launch_dir: Path, key: ECKey, issuer: str, name: str = "test-ehr", **extra) -> None:
    """Write the client's trust file (and its JWKS file) into the app's cds-clients folder."""
    folder = launch_dir / "cds-clients"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    data = {
        "id": name,
        "name": "Test EHR",
        "issuer": issuer,
        "registration": "sandbox",
        "jwks_file": f"{name}.jwks.json",
        "algorithms": ["ES384"],
    } | extra
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


@dataclass
class CdsClient:
    app_url: str
    issuer: str
    key: ECKey
    fhir_base: str
    sent: list[str] = field(default_factory=list)

    def jwt(self, aud: str, **claims) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": aud,
            "exp": now + 120,
            "iat": now,
            "jti": str(uuid.uuid4()),
        } | claims
        header = {"alg": "ES384", "typ": "JWT", "kid": self.key.kid}
        return jwt.encode(header, payload, self.key, algorithms=["ES384"])

    def url(self, service: str | None = None, feedback: bool = False) -> str:
        return (
            f"{self.app_url}/cds-services"
            + (f"/{service}" if service else "")
            + ("/feedback" if feedback else "")
        )

    def discovery(self) -> DiscoveryResponse:
        response = requests.get(
            self.url(), headers={"Authorization": f"Bearer {self.jwt(self.url())}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        return DiscoveryResponse.model_validate(response.json())

    def post(self, url: str, body: dict, token: str | None = None) -> requests.Response:
        token = token or self.jwt(url)
        return requests.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=15
        )

    def request(
        self,
        patient: str,
        encounter: str | None,
        prefetch: dict | None,
        authorization: dict | None = None,
        hook: str = "patient-view",
        **context,
    ) -> dict:
        body: dict = {
            "hook": hook,
            "hookInstance": str(uuid.uuid4()),
            "fhirServer": self.fhir_base,
            "context": {"userId": "Practitioner/demo-ed-physician", "patientId": patient}
            | ({"encounterId": encounter} if encounter else {})
            | context,
        }
        if prefetch is not None:
            body["prefetch"] = prefetch
        if authorization:
            body["fhirAuthorization"] = authorization
        HookRequest.model_validate(body)
        return body

    def call(self, body: dict, service: str = PATIENT_VIEW) -> tuple[int, dict]:
        response = self.post(self.url(service), body)
        if response.status_code == 200:
            HookResponse.model_validate(response.json())
        return response.status_code, response.json()

    def feedback(self, service: str, items: list[dict]) -> requests.Response:
        body = {"feedback": items}
        Feedback.model_validate(body)
        return self.post(self.url(service, feedback=True), body)


def accepted(card: dict, kinds_labels: list[str] | None = None) -> dict:
    """A feedback item accepting the card's suggestions (all, or those with these labels)."""
    chosen = [s for s in card["suggestions"] if kinds_labels is None or s["label"] in kinds_labels]
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": s["uuid"]} for s in chosen],
        "outcomeTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def prefetch_from(discovery: DiscoveryResponse, service: str, fhir, patient: str) -> dict:
    """Run the service's prefetch templates against a FHIR server (a `get(path)` reader)."""
    definition = next(s for s in discovery.services if s.id == service)
    found = {}
    for key, template in (definition.prefetch or {}).items():
        found[key] = fhir.get(template.replace("{{context.patientId}}", patient))
    return found
