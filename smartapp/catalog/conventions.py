"""Layer 2 of the catalog checks: Handoff's conventions, as pydantic models of only the elements
Handoff relies on. A program has a name, a phone, at least one service type from
``urn:handoff:catalog:service-type``, opening hours, a ``providedBy`` Organization and
references shaped ``Type/id``; ``catalog.json`` holds the catalog's settings.

The model classes keep their leading underscore: pydantic names the class in some messages, and
the catalog's messages stay as they were."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from smartapp.catalog.codes import (
    CHARACTERISTIC_SYSTEM,
    CHARACTERISTICS,
    DATE_RE,
    DEFAULT_TIMEZONE,
    ID_RE,
    PHONE_RE,
    SERVICE_SYSTEM,
    SERVICE_TYPES,
    TIME_RE,
)
from smartapp.catalog.problems import join_path


class _Model(BaseModel):
    """Only the elements Handoff relies on; FHIR structure is checked by layer 1."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


def _reference_to(resource_type: str, value: str | None) -> str | None:
    """Check a catalog-internal reference is written ``Type/id``; whether it resolves is
    checked once every file is read."""
    article = "an" if resource_type[0] in "AEIOU" else "a"
    if value is None:
        raise ValueError(f"required: '{resource_type}/<id>' of {article} {resource_type}")
    resource_id = value.removeprefix(f"{resource_type}/")
    if resource_id == value or not ID_RE.fullmatch(resource_id):
        raise ValueError(
            f"{value!r} must look like '{resource_type}/<id>' "
            f"({article} {resource_type} in the catalog)"
        )
    return value


class _OrganizationRef(_Model):
    reference: str | None = Field(default=None, validate_default=True)

    @field_validator("reference")
    @classmethod
    def _shape(cls, value: str | None) -> str | None:
        return _reference_to("Organization", value)


class _LocationRef(_Model):
    reference: str | None = Field(default=None, validate_default=True)

    @field_validator("reference")
    @classmethod
    def _shape(cls, value: str | None) -> str | None:
        return _reference_to("Location", value)


class _ContactPoint(_Model):
    system: str | None = None
    value: str | None = Field(default=None, validate_default=True)

    @field_validator("value")
    @classmethod
    def _phone_shape(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("system") == "phone":
            if value is None:
                raise ValueError("a phone ContactPoint needs a value (the number)")
            if not PHONE_RE.fullmatch(value.strip()) or sum(c.isdigit() for c in value) < 7:
                raise ValueError(f"{value!r} does not look like a phone number")
        if info.data.get("system") == "url" and (
            value is None or not value.startswith("https://") or any(c.isspace() for c in value)
        ):
            # A service's url is its consult link (video visit): the coach's worklist opens it.
            raise ValueError(f"{value!r}: a url ContactPoint needs an https:// address")
        return value


class _Coding(_Model):
    system: str | None = None
    code: str | None = Field(default=None, validate_default=True)
    display: str | None = Field(default=None, validate_default=True)


def _local_code(
    codes: dict[str, str], system: str, code: str | None, info: ValidationInfo
) -> str | None:
    if info.data.get("system") == system and code not in codes:
        raise ValueError(f"{code!r} is not a code of {system} (codes: {', '.join(codes)})")
    return code


def _local_display(
    codes: dict[str, str], system: str, display: str | None, info: ValidationInfo
) -> str | None:
    """A display of a local code, if given, is the code's own display."""
    code = info.data.get("code")
    local = info.data.get("system") == system and isinstance(code, str)
    expected = codes.get(str(code)) if local else None
    if display is not None and expected is not None and display != expected:
        raise ValueError(f"display of {code!r} must be {expected!r} (or leave it out)")
    return display


class _ServiceCoding(_Coding):
    @field_validator("code")
    @classmethod
    def _known(cls, code: str | None, info: ValidationInfo) -> str | None:
        return _local_code(SERVICE_TYPES, SERVICE_SYSTEM, code, info)

    @field_validator("display")
    @classmethod
    def _label(cls, display: str | None, info: ValidationInfo) -> str | None:
        return _local_display(SERVICE_TYPES, SERVICE_SYSTEM, display, info)


class _CharacteristicCoding(_Coding):
    @field_validator("code")
    @classmethod
    def _known(cls, code: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("system") == CHARACTERISTIC_SYSTEM and code == "walk-in":
            raise ValueError(
                "'walk-in' is not a characteristic: use the FHIR element "
                '"appointmentRequired": false'
            )
        return _local_code(CHARACTERISTICS, CHARACTERISTIC_SYSTEM, code, info)

    @field_validator("display")
    @classmethod
    def _label(cls, display: str | None, info: ValidationInfo) -> str | None:
        return _local_display(CHARACTERISTICS, CHARACTERISTIC_SYSTEM, display, info)


class _ServiceType(_Model):
    coding: list[_ServiceCoding] = []


class _Characteristic(_Model):
    coding: list[_CharacteristicCoding] = []


class _AvailableTime(_Model):
    """One line of opening hours: some days, all day or from an opening to a closing time."""

    daysOfWeek: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=list, validate_default=True
    )
    allDay: bool | None = None
    availableStartTime: str | None = Field(default=None, validate_default=True)
    availableEndTime: str | None = Field(default=None, validate_default=True)

    @field_validator("daysOfWeek")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        if not days:
            raise ValueError('required: the days these hours apply to, e.g. ["mon", "tue"]')
        if len(set(days)) != len(days):
            raise ValueError("lists a day more than once")
        return days

    @field_validator("availableStartTime")
    @classmethod
    def _start(cls, value: str | None, info: ValidationInfo) -> str | None:
        return cls._time(value, info, "opening")

    @field_validator("availableEndTime")
    @classmethod
    def _end(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = cls._time(value, info, "closing")
        start = info.data.get("availableStartTime")
        if value is not None and start is not None and value <= start:
            raise ValueError(
                f"closing time {value} is not after opening time {start} "
                "(for hours past midnight, add a second line for the next day)"
            )
        return value

    @staticmethod
    def _time(value: str | None, info: ValidationInfo, what: str) -> str | None:
        if info.data.get("allDay"):
            if value is not None:
                raise ValueError("leave out opening/closing times when allDay is true")
            return value
        if value is None:
            raise ValueError(f'required: the {what} time (hh:mm:ss), or set "allDay": true')
        if not TIME_RE.fullmatch(value):
            raise ValueError(f"{value!r} must be a time written hh:mm:ss, e.g. 08:30:00")
        return value


def _check_bound(value: str | None) -> str | None:
    if value is not None and not (DATE_RE.fullmatch(value) or "T" in value):
        raise ValueError(f"{value!r}: use a full date (YYYY-MM-DD) or date and time")
    return value


class _Period(_Model):
    start: str | None = Field(default=None, validate_default=True)
    end: str | None = None

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("required: when the closure starts")
        return _check_bound(value)

    @field_validator("end")
    @classmethod
    def _end(cls, value: str | None) -> str | None:
        return _check_bound(value)


class _NotAvailable(_Model):
    description: str | None = None
    during: _Period | None = Field(default=None, validate_default=True)

    @field_validator("during")
    @classmethod
    def _during(cls, value: _Period | None) -> _Period | None:
        if value is None:
            raise ValueError('required: the closure period {"start": ..., "end": ...}')
        return value


class _Address(_Model):
    text: str | None = None
    line: list[str] = []
    city: str | None = None
    state: str | None = None
    postalCode: str | None = None


class _Resource(_Model):
    """What every catalog resource needs: an id to reference it by and a name to show."""

    id: str
    name: str

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_RE.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '-' or '.' (a FHIR id)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class _Organization(_Resource):
    resourceType: Literal["Organization"]
    active: bool | None = None
    telecom: list[_ContactPoint] = []
    partOf: _OrganizationRef | None = None


class _Location(_Resource):
    resourceType: Literal["Location"]
    address: _Address | None = Field(default=None, validate_default=True)
    telecom: list[_ContactPoint] = []
    managingOrganization: _OrganizationRef | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: _Address | None) -> _Address | None:
        if value is None or not (value.text or value.line):
            raise ValueError('required: an address with "text" or "line" (street)')
        return value


class _HealthcareService(_Resource):
    resourceType: Literal["HealthcareService"]
    active: bool | None = None
    providedBy: _OrganizationRef | None = Field(default=None, validate_default=True)
    type: list[_ServiceType] = Field(default_factory=list, validate_default=True)
    characteristic: list[_Characteristic] = []
    location: list[_LocationRef] = []
    telecom: list[_ContactPoint] = Field(default_factory=list, validate_default=True)
    availableTime: list[_AvailableTime] = Field(default_factory=list, validate_default=True)
    notAvailable: list[_NotAvailable] = []
    appointmentRequired: bool | None = None
    availabilityExceptions: str | None = None
    comment: str | None = None

    @field_validator("telecom")
    @classmethod
    def _phone(cls, value: list[_ContactPoint]) -> list[_ContactPoint]:
        if not any(point.system == "phone" and point.value for point in value):
            raise ValueError('needs a phone: {"system": "phone", "value": "..."}')
        return value

    @field_validator("providedBy")
    @classmethod
    def _provider(cls, value: _OrganizationRef | None) -> _OrganizationRef | None:
        if value is None:
            raise ValueError('required: {"reference": "Organization/<id>"} of the provider')
        return value

    @field_validator("type")
    @classmethod
    def _service_type(cls, value: list[_ServiceType]) -> list[_ServiceType]:
        if not any(c.system == SERVICE_SYSTEM for concept in value for c in concept.coding):
            raise ValueError(
                f"needs at least one coding from {SERVICE_SYSTEM} "
                f"(codes: {', '.join(SERVICE_TYPES)})"
            )
        return value

    @field_validator("availableTime")
    @classmethod
    def _hours(cls, value: list[_AvailableTime]) -> list[_AvailableTime]:
        if not value:
            raise ValueError("required: the opening hours (at least one line)")
        return value

    def codes(self, concepts: Sequence[_ServiceType | _Characteristic], system: str) -> list[str]:
        """Local codes of ``system`` in ``concepts``, in order, without repeats."""
        found = [c.code for x in concepts for c in x.coding if c.system == system and c.code]
        return list(dict.fromkeys(found))


class _Settings(BaseModel):
    """``catalog.json``: settings for the whole catalog folder."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    description: str | None = None
    timezone: str = DEFAULT_TIMEZONE

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone (e.g. America/New_York)"
            ) from None
        return value


CONVENTIONS: dict[str, type[_Model]] = {
    "Organization": _Organization,
    "Location": _Location,
    "HealthcareService": _HealthcareService,
}


def pydantic_problems(error: ValidationError) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for item in error.errors():
        path = ""
        for key in item["loc"]:
            path = join_path(path, key)
        if item["type"] == "missing":
            message = "required element is missing"
        elif item["type"] == "literal_error":
            message = f"{item['input']!r} is not allowed; expected {item['ctx']['expected']}"
        else:
            message = item["msg"].removeprefix("Value error, ")
        found.append((path, message))
    return found
