"""Trusted CDS clients (the EHRs that may call Handoff's CDS Hooks services), as data: one YAML
file per client in `cds-clients/` beside the EHR registrations (LAUNCH_DIR), or CDS_CLIENTS_DIR.

    id: epic-prod-cds
    name: Epic (production) CDS Hooks
    issuer: https://fhir.hospital.example.org/interconnect/api   # the JWT's `iss`, exactly
    registration: epic-prod       # the EHR registration (launch/*.yaml): FHIR server, writes
    jwks_url: https://fhir.hospital.example.org/interconnect/api/jwks   # or jwks_file:
    algorithms: [ES384, RS384]
    origins: []                   # browser-based clients only: origins CORS lets call Handoff

Owned by the hospital's IT team; validated on load so a mistake names its file and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Algorithm = Literal["ES384", "RS384"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES384", "RS384")


class CdsClientError(Exception):
    """A CDS client file is missing, unreadable or invalid; the message names file and field."""


class CdsClient(BaseModel):
    """One EHR trusted to call Handoff's CDS services."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1)
    # The `iss` of the client's JWTs, exactly as it signs it: the allow-list.
    issuer: str = Field(min_length=1)
    # The EHR registration (launch/*.yaml, by id) this client belongs to: its FHIR server is
    # the only `fhirServer` accepted, its write profile shapes the card's orders and writes.
    registration: str = Field(min_length=1)
    # The client's public keys: a JWKS URL (fetched and cached, re-fetched for an unknown kid)
    # or a JWKS file (a path relative to this file).
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(ALGORITHMS))
    # Origins of a browser-based CDS client allowed by CORS (no wildcards).
    origins: list[str] = Field(default_factory=list)
    # Read from jwks_file on load (not written in the file).
    jwks: dict | None = None

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return value

    @field_validator("origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            if "*" in value or not value.startswith(("https://", "http://")) or "/" in value[8:]:
                raise ValueError(f"{value!r} is not an origin like https://ehr.example.org")
        return values

    @model_validator(mode="after")
    def _one_key_source(self) -> CdsClient:
        if bool(self.jwks_url) == bool(self.jwks_file or self.jwks):
            raise ValueError("give exactly one of jwks_url or jwks_file")
        return self


class CdsClients:
    """The trusted clients, by issuer."""

    def __init__(self, clients: list[CdsClient]) -> None:
        self._by_issuer = {c.issuer: c for c in clients}

    def by_issuer(self, issuer: str) -> CdsClient | None:
        return self._by_issuer.get(issuer)

    def origins(self) -> frozenset[str]:
        return frozenset(o for c in self._by_issuer.values() for o in c.origins)

    def __iter__(self):
        return iter(self._by_issuer.values())


def load_clients(folder: str | Path) -> CdsClients:
    """Every `*.yaml` in `folder` (none when the folder does not exist: no CDS client is
    trusted); an invalid file raises CdsClientError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        return CdsClients([])
    clients = [load_client(path) for path in sorted(folder.glob("*.yaml"))]
    seen: dict[str, str] = {}
    for client in clients:
        if client.issuer in seen:
            raise CdsClientError(
                f"{folder}: {seen[client.issuer]} and {client.id} trust the same issuer"
            )
        seen[client.issuer] = client.id
    return CdsClients(clients)


def load_client(path: Path) -> CdsClient:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CdsClientError(f"{path}: not readable YAML: {exc}") from exc
    try:
        client = CdsClient.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CdsClientError(f"{path}: {problems}") from exc
    if client.jwks_file:
        key_file = (path.parent / client.jwks_file).resolve()
        try:
            jwks = json.loads(key_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CdsClientError(f"{path}: jwks_file {key_file}: {exc}") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise CdsClientError(f"{path}: jwks_file {key_file} is not a JWK Set")
        client = client.model_copy(update={"jwks": jwks})
    return client
