"""Rule pack models, part 1: constants, small types (durations, status filters, codings) and
the primitive selectors a fact is built from (see ``rules/README.md``). ``pack_model`` builds
expressions and the pack document from them; ``pack`` loads and validates packs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from .valueset import VALUESET_ID

NAME = r"^[a-z][a-z0-9_]*$"
SLUG = r"^[a-z0-9][a-z0-9-]*$"
#: Status code that matches a resource without that status element.
ABSENT = "absent"
#: Reason (and notice) of a version 1 pack's ``no_suggestions_when``.
NO_SUGGESTIONS = "no-suggestions"
#: Keys whose values name value sets (one id or a list).
VALUESET_KEYS = frozenset({"valueset", "history_codes"})
PARAM_REF = re.compile(r"^\$([a-z][a-z0-9_]*)$")
DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d)\s*$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


# ---------------------------------------------------------------------------------------
# small types


def _parse_duration(value: Any) -> Any:
    """``12h``, ``30m``, ``365d`` -> timedelta (other values left to pydantic)."""
    if isinstance(value, str):
        m = DURATION.match(value)
        if not m or int(m.group(1)) == 0:
            raise ValueError("expected a positive duration such as 30m, 12h or 365d")
        return timedelta(**{UNITS[m.group(2)]: int(m.group(1))})
    if isinstance(value, timedelta):
        return value
    raise ValueError("expected a duration such as 30m, 12h or 365d")


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    WithJsonSchema({"type": "string", "pattern": DURATION.pattern}),
]
FactName = Annotated[str, Field(pattern=NAME)]
Slug = Annotated[str, Field(pattern=SLUG)]
ValueSetIds = Annotated[
    tuple[Annotated[str, Field(pattern=VALUESET_ID)], ...],
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": VALUESET_ID},
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": VALUESET_ID},
                    "minItems": 1,
                },
            ]
        }
    ),
]
MedicationType = Literal[
    "MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"
]


class Model(BaseModel):
    """Base of every pack model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StatusNot(Model):
    """A status filter that accepts every status except these."""

    not_: tuple[str, ...] = Field(alias="not", min_length=1)


def _status_tag(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return "any_of"
    return "not" if isinstance(value, dict | StatusNot) else None


StatusFilter = Annotated[
    Annotated[tuple[str, ...], Tag("any_of"), Field(min_length=1)]
    | Annotated[StatusNot, Tag("not")],
    Discriminator(
        _status_tag,
        custom_error_type="status_filter",
        custom_error_message="expected a list of status codes or {not: [codes]}",
    ),
]


def status_allows(rule: tuple[str, ...] | StatusNot, status: str | None) -> bool:
    """Whether a status filter accepts a status (None, a missing status, is ``absent``)."""
    code = ABSENT if status is None else status
    if isinstance(rule, StatusNot):
        return code not in rule.not_
    return code in rule


class Coding(Model):
    """A (system, code) pair."""

    system: str = Field(min_length=1)
    code: str = Field(min_length=1)


class PositiveResult(Model):
    """What makes a lab result positive: any one of these."""

    value_codes: tuple[Coding, ...] = ()
    interpretations: tuple[Coding, ...] = ()
    value_strings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# selectors (primitive facts)


class _Timed(Model):
    """Time filters shared by selectors: this visit, not this visit, a look-back window."""

    this_visit: bool = False
    not_this_visit: bool = False
    within: Duration | None = None

    @model_validator(mode="after")
    def _one_visit_filter(self) -> _Timed:
        if self.this_visit and self.not_this_visit:
            raise ValueError("this_visit and not_this_visit exclude each other")
        if getattr(self, "prehospital", None) is not None and not self.this_visit:
            raise ValueError("prehospital widens this_visit: it needs this_visit: true")
        return self


class ConditionSelector(_Timed):
    """Conditions coded in a value set, filtered by clinical and verification status.

    The current encounter's ``reasonCode`` codes count as active conditions this visit
    (``current_encounter.reason_codes``); ``earlier_encounter_reasons`` adds the
    ``reasonCode`` of every other encounter, at its start (recent overdose).
    ``history_codes``: codes in these value sets are never *this visit* (a T40 code of a
    subsequent encounter or sequela is history even when recorded today). Without
    ``clinical_status`` any clinical status passes (an overdose is an event).
    """

    valueset: ValueSetIds
    clinical_status: StatusFilter | None = None
    verification_status: StatusFilter
    history_codes: ValueSetIds | None = None
    earlier_encounter_reasons: bool = False


class ObservationSelector(_Timed):
    """Observations coded in a value set with an accepted status, optionally positive."""

    valueset: ValueSetIds
    status: StatusFilter
    positive: PositiveResult | None = None


class LatestObservationSelector(_Timed):
    """The newest numeric observation in the window has a value at or above a threshold."""

    valueset: ValueSetIds
    status: StatusFilter
    within: Duration
    at_least: float


class MedicationSelector(_Timed):
    """Medication resources of the listed types whose status that type's filter accepts.

    ``intent`` filters MedicationRequests by intent (drafts: ``proposal``, ``plan``).
    ``prehospital``: with ``this_visit``, a resource with no encounter reference timed in
    ``[start - prehospital, start]`` also counts (naloxone given by EMS before arrival).
    ``supply_covers_now``: only resources whose supply still covers *now*: clinical time at
    or before *now*, and that time plus its supply (``daysSupply``,
    ``expectedSupplyDuration``; else this default) at or after *now*.
    ``supply_ended_within``: the end of its supply or effective period (else its clinical
    time) is at or after ``now - window`` (a supply that has not run out counts).
    """

    valueset: ValueSetIds
    status: dict[MedicationType, StatusFilter] = Field(min_length=1)
    intent: StatusFilter | None = None
    prehospital: Duration | None = None
    supply_covers_now: Duration | None = None
    supply_ended_within: Duration | None = None

    def status_of(self, resource_type: str) -> tuple[str, ...] | StatusNot:
        """The status filter for a resource type (one of ``status``' keys: the chart's
        entries are chosen by them)."""
        return self.status[cast(MedicationType, resource_type)]


class AllergySelector(Model):
    """AllergyIntolerance coded in a value set, by clinical and verification status."""

    valueset: ValueSetIds
    clinical_status: StatusFilter
    verification_status: StatusFilter


class ServiceRequestSelector(_Timed):
    """ServiceRequests coded in a value set with an accepted status."""

    valueset: ValueSetIds
    status: StatusFilter
