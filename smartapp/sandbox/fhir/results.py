"""What the FHIR store's interactions return and store: an `Outcome` per interaction, a
`PreparedResource` ready for the tables, server-assigned ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson

Key = tuple[str, str]  # (resource type, id)


@dataclass
class Outcome:
    """Result of one interaction: HTTP status and, for single resources, version data."""

    status: int
    resource: dict | None = None
    rtype: str | None = None
    rid: str | None = None
    version: int | None = None
    last_updated: str | None = None

    @property
    def location(self) -> str | None:
        """Relative versioned location, e.g. ServiceRequest/abc/_history/1."""
        if self.rtype and self.rid and self.version:
            return f"{self.rtype}/{self.rid}/_history/{self.version}"
        return None

    @property
    def etag(self) -> str | None:
        """Weak ETag of the version."""
        return f'W/"{self.version}"' if self.version else None


@dataclass
class PreparedResource:
    """A resource ready to store: its row values and its search index rows."""

    rtype: str
    rid: str
    resource: dict
    version: int
    last_updated_ms: int
    patient_id: str | None
    index: list[tuple]

    def row(self) -> dict:
        """Values for the resources table."""
        return {
            "type": self.rtype,
            "id": self.rid,
            "version": self.version,
            "last_updated": self.last_updated_ms,
            "patient_id": self.patient_id,
            "deleted": False,
            "body": orjson.dumps(self.resource),
        }

    def index_dicts(self) -> list[dict]:
        """Values for the search index table."""
        return [
            {
                "res_type": self.rtype,
                "res_id": self.rid,
                "param": p,
                "system": s,
                "value": v,
                "lo": lo,
                "hi": hi,
            }
            for p, s, v, lo, hi in self.index
        ]


def new_id() -> str:
    """A server-assigned resource id."""
    return str(uuid.uuid4())
