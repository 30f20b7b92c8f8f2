"""The chart's basic types: what a chart is read from (items), what it holds (entries), and
its errors. ``chart`` builds and queries the chart; ``chart_input`` checks bundles and lists of
resources; ``chart_refs`` resolves references; ``chart_asof`` is the chart as it stood."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

#: Bundle types a chart can come from. batch/transaction responses carry nested searchsets.
BUNDLE_TYPES = frozenset(
    {"collection", "searchset", "transaction", "batch-response", "transaction-response"}
)
MEDICATION_TYPES = frozenset(
    {"MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"}
)
#: Marks a resource that names an encounter the chart cannot identify (never "this visit").
UNMATCHED_ENCOUNTER = "(unmatched encounter)"


class ChartError(ValueError):
    """The chart input is malformed; the message names what is wrong and where."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind  # a short name for what is wrong, where the caller may need it


#: Reports a resource left out of a lenient chart: (its key, what is wrong, in words).
Unreadable = Callable[[str, str], None]


#: Whether a chart built for some rules keeps a resource with these (system, code) codes.
KeepCodes = Callable[[tuple[tuple[str, str], ...]], bool]


class MultiplePatientsError(ChartError):
    """The resources are about more than one patient (so they are not one chart)."""


#: A resource as read from the input: (bundle fullUrl or None, resource, where it was).
ChartItem = tuple[str | None, dict[str, Any], str]


@dataclass(frozen=True, slots=True)
class ChartEntry:
    """One resource with what the engine reads from it, computed once at load."""

    key: str
    resource: dict[str, Any]
    codes: tuple[tuple[str, str], ...]
    time: datetime | None
    encounter: str | None  # key of the encounter it references; None if it names none

    def __init__(
        self,
        key: str,
        resource: dict[str, Any],
        codes: tuple[tuple[str, str], ...],
        time: datetime | None,
        encounter: str | None,
    ) -> None:
        """The generated one, faster: a frozen dataclass's ``__init__`` sets each field
        through ``object.__setattr__`` (about 1 us an entry, and a population's charts make
        millions); the slots' own setters do it in C (about 0.6 us). Still frozen after."""
        set_key, set_resource, set_codes, set_time, set_encounter = _SETTERS
        set_key(self, key)
        set_resource(self, resource)
        set_codes(self, codes)
        set_time(self, time)
        set_encounter(self, encounter)

    @property
    def resource_type(self) -> str:
        """The resource's FHIR type."""
        return self.resource["resourceType"]


#: The setters of ChartEntry's slots, in field order (its ``__init__``).
_SETTERS = tuple(getattr(ChartEntry, f.name).__set__ for f in fields(ChartEntry))


class ValueSetLike(Protocol):
    """What :meth:`Chart.members` needs of a value set."""

    @property
    def systems(self) -> frozenset[str]: ...

    def contains(self, system: str, code: str) -> bool: ...
