"""What a caller may do: the interface the FHIR service asks, whatever decides it.

The FHIR service stays ignorant of OAuth: it asks an `Access` before each interaction.
`FullAccess` serves the chart and seeding; the SMART scope policy lives in auth/scopes.py.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import ColumnElement

#: FHIR interaction names used in access checks.
READ, SEARCH, CREATE, UPDATE, DELETE = "read", "search", "create", "update", "delete"


class Access(Protocol):
    """Decides reads and writes for one caller."""

    def require(self, interaction: str, rtype: str) -> None:
        """Raise FhirError(403) unless some grant allows `interaction` on `rtype` at all."""

    def search_filter(self, rtype: str) -> ColumnElement[bool] | None:
        """Extra WHERE condition on the resources table for searches (None: no limit)."""

    def can_read(self, rtype: str, resource: dict, patient_id: str | None) -> bool:
        """May the caller see this stored resource?"""

    def check_write(
        self, interaction: str, rtype: str, resource: dict, patients: list[str | None]
    ) -> None:
        """Raise FhirError(403) unless the caller may write this resource.

        `patients` are the patient compartments the resource belongs to (None for a target
        that belongs to no patient).
        """


class FullAccess:
    """Everything allowed: the EHR's own screens and the seeder."""

    def require(self, interaction: str, rtype: str) -> None:
        return None

    def search_filter(self, rtype: str) -> ColumnElement[bool] | None:
        return None

    def can_read(self, rtype: str, resource: dict, patient_id: str | None) -> bool:
        return True

    def check_write(
        self, interaction: str, rtype: str, resource: dict, patients: list[str | None]
    ) -> None:
        return None
