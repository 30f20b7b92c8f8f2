"""Who acted on a referral: named on every write (Provenance agent) and every log event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ActorKind = Literal["physician", "coach", "supervisor", "partner", "system"]
# A `urn:` reference, known only to Handoff, goes in a Reference as an identifier of this system.
URI_IDENTIFIER = "urn:ietf:rfc:3986"
# The FHIR type of who acted where the reference does not say it (Reference.type).
KIND_TYPES = {"partner": "Organization", "system": "Device"}


@dataclass(frozen=True)
class Actor:
    """A person or organisation that acted. `reference` is a FHIR reference the EHR can
    resolve (`Practitioner/..`, `Organization/..`) or a `urn:` for staff known only to
    Handoff's identity provider; `display` is the name shown to people."""

    kind: ActorKind
    display: str
    reference: str | None = None

    @property
    def resolvable(self) -> bool:
        """True when the EHR can resolve `reference` (not a `urn:`)."""
        return bool(self.reference) and not str(self.reference).startswith("urn:")

    def who(self) -> dict[str, Any]:
        """A FHIR Reference to the actor: `reference` where the EHR can resolve it, else
        Handoff's `urn:` as an identifier; the FHIR type for a partner (Organization) or
        Handoff itself (Device); the display name always."""
        ref: dict[str, Any] = {}
        if self.resolvable:
            ref["reference"] = self.reference
        if self.kind in KIND_TYPES:
            ref["type"] = KIND_TYPES[self.kind]
        if self.reference and not self.resolvable:
            ref["identifier"] = {"system": URI_IDENTIFIER, "value": self.reference}
        return ref | {"display": self.display}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "display": self.display, "reference": self.reference}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Actor:
        return cls(data["kind"], data.get("display") or "", data.get("reference"))
