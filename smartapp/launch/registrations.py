"""EHR registrations (launch/*.yaml): which issuers may launch Handoff and how to talk to each.

Owned by the hospital's IT team as data; validated on load so a mistake names its file and field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from smartapp.engine import kinds

DEFAULT_SCOPES = [
    "launch",
    "openid",
    "fhirUser",
    "patient/Patient.rs",
    "patient/Encounter.rs",
    "patient/Condition.rs",
    "patient/Observation.rs",
    "patient/MedicationRequest.rs",
    "patient/MedicationStatement.rs",
    "patient/MedicationAdministration.rs",
    "patient/MedicationDispense.rs",
    "patient/AllergyIntolerance.rs",
    "patient/ServiceRequest.rs",
]
# Write scopes are added from the registration's write profile (smart.requested_scopes):
# create, and search to find an earlier attempt by Handoff's identifier before a retry.


class RegistrationError(Exception):
    """A registration file is missing, unreadable or invalid; the message names file and field."""


class WriteSettings(BaseModel):
    """Site choices for what Handoff writes (see shared spec writeback.md)."""

    model_config = ConfigDict(extra="forbid")

    # See smartapp/writeback/profiles.py: fhir-rest (a plain FHIR server), epic, oracle-health.
    profile: Literal["fhir-rest", "epic", "oracle-health"] = "fhir-rest"
    service_request_code: dict = Field(
        default_factory=lambda: {
            "system": "http://snomed.info/sct",
            "code": "461481000124109",
            "display": "Referral to peer support",
        }
    )
    note_type: dict = Field(
        default_factory=lambda: {
            "system": "http://loinc.org",
            "code": "11488-4",
            "display": "Consult note",
        }
    )
    doc_status: Literal["final", "preliminary"] = "final"
    # Who receives the referral and owns the Task: a FHIR Reference (reference and/or display).
    coach_team: dict = Field(default_factory=lambda: {"display": "Peer recovery coach team"})
    # The site's coach program is a 42 CFR Part 2 program: add the Part 2 labels.
    part2_program: bool = False
    # Draft MedicationRequests (status draft, intent proposal, no dose: the physician completes
    # and signs them in the EHR) where the profile writes MedicationRequest. Codes default to the
    # ingredient codes of the spec's value sets; a site may name its own orderable.
    draft_medications: bool = True
    medication_codes: dict[str, dict] = Field(
        default_factory=lambda: {
            kinds.MOUD_BUPRENORPHINE: {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1819",
                "display": "buprenorphine",
            },
            kinds.NALOXONE_KIT: {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "7242",
                "display": "naloxone",
            },
        }
    )
    # Oracle Health: the coach pool that receives the warm-handoff Communication.
    coach_pool: dict | None = None


#: A SMART v1 or v2 system scope: `system/Task.rus`, `system/*.read`.
SYSTEM_SCOPE = r"^system/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|(?=[cruds])c?r?u?d?s?)$"


class BackendSettings(BaseModel):
    """SMART Backend Services at this EHR (client_credentials grant, private_key_jwt): Handoff's
    own system client, for the writes no physician's launch is live for (outbox retries after
    the session, coach and partner updates, completion). The EHR registers `client_id` with
    Handoff's JWKS (URL `/.well-known/jwks.json`, or the key set) and grants `scopes`."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1)
    # The kid of Handoff's key registered for this client (`handoff keys list`).
    key_id: str = Field(min_length=1)
    # Its algorithm; None: the key's own (RS384 or ES384).
    signing_alg: Literal["RS384", "ES384"] | None = None
    # Exactly what the EHR registered (an EHR refuses a scope it did not grant): system/ only.
    scopes: list[str] = Field(min_length=1)
    # The token endpoint; None: from the EHR's .well-known/smart-configuration.
    token_endpoint: str | None = None

    @field_validator("scopes")
    @classmethod
    def _system_scopes(cls, values: list[str]) -> list[str]:
        wrong = [v for v in values if not re.match(SYSTEM_SCOPE, v)]
        if wrong:
            raise ValueError(f"{wrong}: backend scopes are system/ scopes like system/Task.rus")
        return values

    @field_validator("token_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("token_endpoint must be an http(s) URL")
        return value


class Registration(BaseModel):
    """One EHR that may launch Handoff."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    # The EHR's FHIR base URL, exactly as it sends it in `iss`: the allow-list.
    iss: str
    client_id: str
    auth_method: Literal["public", "client_secret_basic", "private_key_jwt"] = "public"
    # client_secret_basic: the NAME of the environment variable holding the secret (never the
    # secret itself: registrations live in git).
    client_secret_env: str | None = None
    # private_key_jwt: the key id (kid) of Handoff's key registered with this EHR, and its alg.
    key_id: str | None = None
    signing_alg: Literal["RS384", "ES384"] = "RS384"
    # Scopes in SMART v2 form; asked as v1 where the EHR does not advertise permission-v2.
    scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    # Scopes asked in addition to `scopes` (which replaces the defaults when given), so a site
    # adds one without repeating the defaults.
    extra_scopes: list[str] = Field(default_factory=list)
    # Origins allowed to embed Handoff in an iframe (Content-Security-Policy frame-ancestors).
    frame_ancestors: list[str] = Field(default_factory=list)
    # Allow standalone launch (the physician opens Handoff and picks a patient at the EHR).
    standalone: bool = True
    write: WriteSettings = Field(default_factory=WriteSettings)
    # SMART Backend Services at this EHR; None: no backend access, so writes made after the
    # physician's launch wait for the next launch of the visit (the queue says so).
    backend: BackendSettings | None = None

    @field_validator("iss")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("iss must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("frame_ancestors")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            if "*" in value:
                raise ValueError(
                    f"{value!r}: no wildcards; name each origin allowed to embed Handoff"
                )
            if not value.startswith(("https://", "http://")) or any(c in value for c in " ;,'"):
                raise ValueError(f"{value!r} is not an origin like https://ehr.example.org")
        return values

    @model_validator(mode="after")
    def _auth_settings(self) -> Registration:
        if self.auth_method == "client_secret_basic" and not self.client_secret_env:
            raise ValueError("client_secret_basic needs client_secret_env (an env var name)")
        if self.auth_method == "private_key_jwt" and not self.key_id:
            raise ValueError("private_key_jwt needs key_id (see `handoff keys list`)")
        return self

    def client_secret(self) -> str:
        """The secret from the environment; a clear error names the variable when unset."""
        value = os.environ.get(self.client_secret_env or "", "")
        if not value:
            raise RegistrationError(
                f"registration {self.id}: environment variable {self.client_secret_env} "
                "(the client secret) is not set"
            )
        return value


class Registry:
    """All registrations, looked up by issuer (the allow-list) or by id."""

    def __init__(self, registrations: list[Registration]) -> None:
        self._by_iss = {reg.iss: reg for reg in registrations}
        self._by_id = {reg.id: reg for reg in registrations}

    def for_issuer(self, iss: str) -> Registration | None:
        return self._by_iss.get(iss.rstrip("/"))

    def by_id(self, registration_id: str) -> Registration | None:
        return self._by_id.get(registration_id)

    def __iter__(self):
        return iter(self._by_id.values())


def load_registry(folder: str | Path) -> Registry:
    """Read every `*.yaml` in `folder`; any invalid file raises RegistrationError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegistrationError(
            f"{folder}: registration folder does not exist; set LAUNCH_DIR (environment "
            "HANDOFF_LAUNCH_DIR) to the folder of EHR registrations"
        )
    registrations = []
    files_by_iss: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        registration = load_registration(path)
        registrations.append(registration)
        files_by_iss.setdefault(registration.iss, []).append(path.name)
    ids = [reg.id for reg in registrations]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise RegistrationError(f"{folder}: duplicate registration id(s) {sorted(duplicates)}")
    for iss, files in files_by_iss.items():
        if len(files) > 1:
            raise RegistrationError(
                f"{folder}: {' and '.join(files)} register the same iss {iss}; "
                "an issuer must name exactly one registration"
            )
    return Registry(registrations)


def missing_secrets(registry: Registry) -> list[str]:
    """One message per client_secret_basic registration whose secret variable is unset."""
    return [
        f"registration {reg.id}: environment variable {reg.client_secret_env} "
        "(its client secret, client_secret_env) is not set"
        for reg in registry
        if reg.auth_method == "client_secret_basic" and not os.environ.get(reg.client_secret_env)
    ]


def load_registration(path: Path) -> Registration:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RegistrationError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Registration.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise RegistrationError(f"{path}: {problems}") from exc
