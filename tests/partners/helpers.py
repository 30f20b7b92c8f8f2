"""A community partner's own backend client, as a program's system would be: it holds its
private key, signs its own client assertion (ES384 or RS384) and calls Handoff's partner API
over HTTP. Also the partner files a test writes into the app's launch/partners/ folder."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = "system/Task.rs system/Task.u system/ServiceRequest.rs system/Patient.rs"


def new_key(kid: str, alg: str = "ES384") -> ECKey | RSAKey:
    if alg == "RS384":
        return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    return ECKey.generate_key("P-384", parameters={"kid": kid}, private=True)


@dataclass
class PartnerClient:
    """One partner's backend client: its id, its keys (the first signs by default)."""

    app_url: str
    partner_id: str
    client_id: str
    organization: str
    keys: list[Any]
    alg: str = "ES384"
    programs: list[str] = field(default_factory=list)
    web_users: list[str] = field(default_factory=list)

    @property
    def token_url(self) -> str:
        return f"{self.app_url}/partner/auth/token"

    def jwks(self) -> dict:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    def file_data(self, **client_changes) -> dict:
        """The partner file the hospital's IT team would write for this partner."""
        return {
            "id": self.partner_id,
            "name": self.partner_id.replace("-", " ").title(),
            "organization": {"reference": self.organization},
            "programs": self.programs,
            "client": {
                "client_id": self.client_id,
                "jwks": self.jwks(),
                "algorithms": [self.alg],
                **client_changes,
            },
            "web_users": self.web_users,
        }

    def write_file(self, folder: Path, **client_changes) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.partner_id}.yaml"
        path.write_text(yaml.safe_dump(self.file_data(**client_changes)))
        return path

    def assertion(
        self,
        *,
        aud: str | None = None,
        exp_in: float = 240,
        jti: str | None = None,
        key: Any = None,
        kid: str | None = None,
        client_id: str | None = None,
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        claims = {
            "iss": client_id or self.client_id,
            "sub": client_id or self.client_id,
            "aud": aud or self.token_url,
            "exp": int(now + exp_in),
            "iat": now,
            "jti": jti or secrets.token_urlsafe(16),
        }
        header = {"alg": self.alg, "kid": kid or key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=[self.alg])

    def token_response(
        self, assertion: str | None = None, scope: str = SCOPES
    ) -> requests.Response:
        return requests.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion or self.assertion(),
                "scope": scope,
            },
            timeout=15,
        )

    def token(self) -> str:
        answer = self.token_response()
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def get(self, path: str, token: str | None = None) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {token or self.token()}",
            "Accept": "application/fhir+json",
        }
        return requests.get(f"{self.app_url}/partner/fhir/{path}", headers=headers, timeout=15)

    def put(
        self, path: str, body: dict, version: str | None, token: str | None = None
    ) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {token or self.token()}",
            "Content-Type": "application/fhir+json",
        }
        if version is not None:
            headers["If-Match"] = f'W/"{version}"'
        return requests.put(
            f"{self.app_url}/partner/fhir/{path}", json=body, headers=headers, timeout=30
        )

    def patch(
        self, path: str, operations: list, version: str, token: str | None = None
    ) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {token or self.token()}",
            "Content-Type": "application/json-patch+json",
            "If-Match": f'W/"{version}"',
        }
        return requests.patch(
            f"{self.app_url}/partner/fhir/{path}", json=operations, headers=headers, timeout=30
        )
