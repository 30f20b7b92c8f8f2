"""Who acted on a referral: named on every write (Provenance agent) and every log event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ActorKind = Literal["physician", "coach", "supervisor", "partner", "system"]


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
