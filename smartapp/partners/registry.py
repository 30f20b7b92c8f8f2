"""Community partners as data (launch/partners/*.yaml, owned by the hospital's IT team): each
file one organisation, its catalog programs, the backend-services client it reaches Handoff's
partner API with, and the identity-provider users who use the partner web page.

Validated on load so a mistake names its file, line and field; re-read when a file changes, so
revoking a client or a key in its file takes effect on the next request, without a restart.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: What a partner's backend client may be granted (SMART v2 system scopes).
PARTNER_SCOPES = (
    "system/Task.rs",
    "system/Task.u",
    "system/ServiceRequest.rs",
    "system/Patient.rs",
)
Algorithm = Literal["ES384", "RS384"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES384", "RS384")


class PartnerError(Exception):
    """A partner file is missing, unreadable or invalid; the message names file, line, field."""


class OrganizationRef(BaseModel):
    """The partner organisation as FHIR names it: `Organization/<id>` (the catalog's, where
    the catalog has it) and optionally an identifier (e.g. its NPI)."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(pattern=r"^Organization/[A-Za-z0-9\-.]{1,64}$")
    identifier: dict[str, str] | None = None

    @field_validator("identifier")
    @classmethod
    def _identifier(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and not {"system", "value"} <= set(value):
            raise ValueError("an identifier needs system and value")
        return value


class BackendClient(BaseModel):
    """The partner's SMART Backend Services client: its id and public keys (a JWKS URL, fetched
    on each token request so a rotation just works, and/or the JWKS itself)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=3, max_length=200)
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(ALGORITHMS))
    scopes: list[str] = Field(default_factory=lambda: list(PARTNER_SCOPES))
    # Refuse the client (every token it holds too) at once.
    revoked: bool = False
    # Key ids refused at once (assertions signed with them, and tokens they earned).
    revoked_kids: list[str] = Field(default_factory=list)

    @field_validator("jwks_uri")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("jwks_uri must be an http(s) URL")
        return value

    @field_validator("jwks")
    @classmethod
    def _key_set(cls, value: dict | None) -> dict | None:
        if value is not None:
            keys = value.get("keys")
            if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
                raise ValueError('jwks must be a JWK Set: {"keys": [...]}')
            if any("d" in key for key in keys):
                raise ValueError("jwks holds a private key: give only the public keys")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, values: list[str]) -> list[str]:
        unknown = [s for s in values if s not in PARTNER_SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {unknown}; allowed: {list(PARTNER_SCOPES)}")
        return values

    @model_validator(mode="after")
    def _keys_given(self) -> BackendClient:
        if not self.jwks_uri and not self.jwks:
            raise ValueError("give jwks_uri or jwks (the client's public keys)")
        return self


class Partner(BaseModel):
    """One community partner organisation."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")
    name: str = Field(min_length=1, max_length=200)
    organization: OrganizationRef
    # HealthcareService ids of the catalog (catalog/): the programs this partner runs.
    programs: list[str] = Field(min_length=1)
    # Its backend client; None: the partner uses the web page only.
    client: BackendClient | None = None
    # `sub`s of the hospital identity provider's users who act for this partner on the web
    # page (with the `partner` role), when the provider sends no organisation claim.
    web_users: list[str] = Field(default_factory=list)

    @property
    def reference(self) -> str:
        return self.organization.reference

    def as_reference(self) -> dict[str, Any]:
        """The FHIR Reference to the partner organisation (reference, identifier, display)."""
        out: dict[str, Any] = {"reference": self.reference, "display": self.name}
        if self.organization.identifier:
            out["identifier"] = dict(self.organization.identifier)
        return out


class Partners:
    """All partners, looked up by id, client id, organisation reference or program."""

    def __init__(self, partners: list[Partner]) -> None:
        self._by_id = {p.id: p for p in partners}
        self._by_client = {p.client.client_id: p for p in partners if p.client}

    def __iter__(self) -> Iterator[Partner]:
        return iter(self._by_id.values())

    def by_id(self, partner_id: str | None) -> Partner | None:
        return self._by_id.get(partner_id or "")

    def by_client(self, client_id: str) -> Partner | None:
        return self._by_client.get(client_id)

    def for_user(self, sub: str | None) -> Partner | None:
        return next((p for p in self if sub and sub in p.web_users), None)

    def for_program(self, program_id: str | None) -> list[Partner]:
        return [p for p in self if program_id and program_id in p.programs]


def load_partners(folder: str | Path) -> Partners:
    """Every `*.yaml` in `folder` (none, or no folder: no partners); an invalid file raises
    PartnerError naming file, line and field."""
    folder = Path(folder)
    partners = [load_partner(path) for path in sorted(folder.glob("*.yaml"))]
    for attribute in ("id", "reference"):
        values = [getattr(p, attribute) for p in partners]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise PartnerError(f"{folder}: the same partner {attribute} twice: {duplicates}")
    clients = [p.client.client_id for p in partners if p.client]
    if len(clients) != len(set(clients)):
        raise PartnerError(f"{folder}: two partners share a client_id")
    return Partners(partners)


def load_partner(path: Path) -> Partner:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        lines = _lines(yaml.compose(text))
    except (OSError, yaml.YAMLError) as exc:
        raise PartnerError(f"{path}: not readable YAML: {exc}") from exc
    try:
        return Partner.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(root)"
            problems.append(f"{path}:{_line_of(lines, loc)}: {field}: {err['msg']}")
        raise PartnerError("\n".join(problems)) from exc


def _lines(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """The 1-based line of every key and item of a YAML document, by its path."""
    found: dict[tuple, int] = {}
    if node is None:
        return found
    found[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found[(*path, key.value)] = key.start_mark.line + 1
            for sub, line in _lines(value, (*path, key.value)).items():
                found.setdefault(sub, line)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_lines(item, (*path, index)))
    return found


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    """The line of the deepest part of `loc` the file has (a missing field: its parent's)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


_SAFE = re.compile(r"^[A-Za-z0-9_.-]+\.yaml$")


class PartnerDirectory:
    """The partners of a folder, re-read when one of its files changes (name, size or time):
    cheap to ask on every request, so a revocation edited into a file applies at once. A
    broken edit lets no partner in (fail closed) and reports the problem in `error`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._signature: tuple = ()
        self._partners = Partners([])
        self.error: str | None = None
        self.current()

    def _stamp(self) -> tuple:
        if not self.folder.is_dir():
            return ()
        out = []
        for path in sorted(self.folder.glob("*.yaml")):
            if _SAFE.match(path.name):
                stat = path.stat()
                out.append((path.name, stat.st_size, stat.st_mtime_ns))
        return tuple(out)

    def current(self) -> Partners:
        stamp = self._stamp()
        with self._lock:
            if stamp != self._signature or not stamp:
                try:
                    self._partners = load_partners(self.folder)
                    self.error = None
                except PartnerError as exc:
                    # A broken file: nobody is let in on a half-read revocation.
                    self._partners = Partners([])
                    self.error = str(exc)
                self._signature = stamp
            return self._partners
