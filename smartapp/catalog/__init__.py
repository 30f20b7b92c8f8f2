"""Community resource catalog: the programs a peer recovery coach can hand a patient off to.

The catalog is data owned by the coach program, not by developers: a folder of FHIR R4
Organization, Location and HealthcareService JSON files (one resource per file) plus an optional
``catalog.json`` settings file (catalog name and IANA time zone). See ``catalog/README.md``.

Loading validates in two layers and reports every problem at once, each with its file and the
field path, so whoever edits the data can fix everything in one pass:

1. FHIR R4 structure, from fhirclient's R4 model definitions: unknown elements, wrong JSON types,
   malformed dates and times, missing required elements; then each resource is parsed with its
   fhirclient model.
2. Handoff's conventions (pydantic): a program has a name, a phone, at least one service type
   from ``urn:handoff:catalog:service-type``, opening hours, a ``providedBy`` Organization and
   locations that exist in the catalog.

Pure: no Flask, no network. ``python -m smartapp.catalog check FOLDER`` runs the same checks.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhirclient.models import fhirdate, fhirdatetime, fhirinstant, fhirtime
from fhirclient.models.fhirabstractbase import FHIRAbstractBase, FHIRValidationError
from fhirclient.models.fhirabstractresource import FHIRAbstractResource
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from fhirclient.models.healthcareservice import HealthcareService
from fhirclient.models.location import Location
from fhirclient.models.organization import Organization
from fhirclient.models.resource import Resource
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

SERVICE_SYSTEM = "urn:handoff:catalog:service-type"
"""Local CodeSystem for what a program offers (HealthcareService.type)."""

CHARACTERISTIC_SYSTEM = "urn:handoff:catalog:characteristic"
"""Local CodeSystem for how a program works (HealthcareService.characteristic)."""

SERVICE_TYPES: dict[str, str] = {
    "buprenorphine": "Buprenorphine (office-based or bridge clinic)",
    "methadone-program": "Methadone (opioid treatment program)",
    "naltrexone": "Naltrexone (extended-release injection or oral)",
    "harm-reduction": "Harm reduction services",
    "syringe-services": "Syringe services program",
    "naloxone-distribution": "Naloxone distribution",
    "telehealth": "Telehealth MOUD",
    "peer-support": "Peer recovery support",
    "residential": "Residential treatment",
}
"""Codes of SERVICE_SYSTEM and their display (also the label shown to the physician)."""

CHARACTERISTICS: dict[str, str] = {
    "accepting-new-patients": "Accepting new patients",
    "telehealth": "Offers telehealth (video or phone)",
    "same-day-bup": "Same-day buprenorphine start",
}
"""Codes of CHARACTERISTIC_SYSTEM and their display."""

SETTINGS_FILE = "catalog.json"
DEFAULT_TIMEZONE = "America/New_York"
RESOURCE_TYPES = ("Organization", "Location", "HealthcareService")

_FHIR_MODELS: dict[str, type[FHIRAbstractResource]] = {
    "Organization": Organization,
    "Location": Location,
    "HealthcareService": HealthcareService,
}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_LABELS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PHONE_RE = re.compile(r"[0-9+()\-. ]+(\s*(x|ext\.?)\s*[0-9]+)?", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the catalog: the file (relative to the catalog folder), the field path
    inside the resource (``telecom[0].value``; empty for the whole file) and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}: {where}{self.message}"


class CatalogError(Exception):
    """The catalog cannot be used; ``problems`` lists every problem found, not just the first."""

    def __init__(self, folder: Path | str, problems: Sequence[Problem]) -> None:
        self.folder = Path(folder)
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(
            f"catalog {self.folder}: {count} problem{'s' if count != 1 else ''}\n{lines}"
        )


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _within(path: str, parent: str) -> bool:
    """True when ``path`` is ``parent`` or inside it (so one mistake is reported once)."""
    return path == parent or path.startswith((parent + ".", parent + "["))


# --------------------------------------------------------------------------------------------
# Layer 1: FHIR R4 structure, from fhirclient's model definitions


_FHIR_TIME_KINDS: tuple[tuple[type, str], ...] = (
    (fhirtime.FHIRTime, "time (hh:mm:ss)"),
    (fhirinstant.FHIRInstant, "instant (YYYY-MM-DDThh:mm:ss+zz:zz)"),
    (fhirdatetime.FHIRDateTime, "dateTime (YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss+zz:zz)"),
    (fhirdate.FHIRDate, "date (YYYY-MM-DD)"),
)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _check_value(value: Any, typ: type, path: str, out: list[tuple[str, str]]) -> None:
    """Check one JSON value against the fhirclient type of its element."""
    if value is None:
        out.append((path, "null is not allowed in FHIR JSON (leave the element out)"))
    elif isinstance(typ, type) and issubclass(typ, Resource):
        resource_type = value.get("resourceType") if isinstance(value, dict) else None
        model = FHIRElementFactory.instantiate(resource_type, None) if resource_type else None
        if not isinstance(model, Resource):
            out.append((path, "expected a FHIR resource with a known resourceType"))
        else:
            _check_element(value, type(model), path, out)
    elif isinstance(typ, type) and issubclass(typ, FHIRAbstractBase):
        _check_element(value, typ, path, out)
    elif isinstance(typ, type) and issubclass(typ, fhirdate.FHIRDate):
        kind = next(label for cls, label in _FHIR_TIME_KINDS if issubclass(typ, cls))
        if not isinstance(value, str):
            out.append((path, f"expected a FHIR {kind} string, got {_json_type(value)}"))
            return
        try:
            typ(value)
        except (TypeError, ValueError):
            out.append((path, f"{value!r} is not a valid FHIR {kind}"))
    elif typ is bool:
        if not isinstance(value, bool):
            out.append((path, f"expected true or false, got {_json_type(value)}"))
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            out.append((path, f"expected an integer, got {_json_type(value)}"))
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append((path, f"expected a number, got {_json_type(value)}"))
    elif typ is str:
        if not isinstance(value, str):
            out.append((path, f"expected a string, got {_json_type(value)}"))
        elif not value.strip():
            out.append((path, "empty string is not allowed in FHIR (leave the element out)"))


def _check_element(
    data: Any, cls: type[FHIRAbstractBase], path: str, out: list[tuple[str, str]]
) -> None:
    """Check a JSON object against a FHIR R4 element or resource definition, collecting every
    problem (fhirclient's own parser stops at the first bad item of each list)."""
    if not isinstance(data, dict):
        out.append((path, f"expected an object, got {_json_type(data)}"))
        return
    known = {"resourceType"} if issubclass(cls, Resource) else set()
    choices: dict[str, list[str]] = {}
    required_choices: set[str] = set()
    for _name, jsname, typ, is_list, of_many, required in cls().elementProperties():
        known.update((jsname, "_" + jsname))
        if of_many:
            if required:
                required_choices.add(of_many)
            if jsname in data:
                choices.setdefault(of_many, []).append(jsname)
        if jsname not in data:
            if required and not of_many:
                out.append((_join(path, jsname), "required element is missing"))
            continue
        value, where = data[jsname], _join(path, jsname)
        if is_list:
            if not isinstance(value, list):
                out.append((where, f"expected an array, got {_json_type(value)}"))
            elif not value:
                out.append((where, "empty array is not allowed in FHIR (leave the element out)"))
            else:
                for index, item in enumerate(value):
                    _check_value(item, typ, _join(where, index), out)
        elif isinstance(value, list):
            out.append((where, "expected a single value, not an array"))
        else:
            _check_value(value, typ, where, out)
    for of_many in sorted(required_choices - set(choices)):
        out.append((_join(path, of_many + "[x]"), "required element is missing"))
    for of_many, present in choices.items():
        if len(present) > 1:
            out.append((_join(path, of_many + "[x]"), f"only one of {', '.join(present)}"))
    label = getattr(cls, "resource_type", cls.__name__)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append((_join(path, key), f"unknown element: not part of FHIR R4 {label}{hint}"))


def _flatten_fhirclient(error: Exception, path: str = "") -> list[tuple[str, str]]:
    """Paths and messages out of fhirclient's nested FHIRValidationError (a fallback)."""
    if isinstance(error, FHIRValidationError):
        here = _join(path, error.path) if error.path else path
        found: list[tuple[str, str]] = []
        for inner in error.errors:
            found.extend(_flatten_fhirclient(inner, here))
        return found
    return [(path, str(error))]


def fhir_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """FHIR R4 problems in one catalog resource as (field path, message); empty when valid.

    Checks the JSON against fhirclient's R4 definitions, then parses it with the fhirclient
    model so the resource is known to be usable by fhirclient code."""
    resource_type = data.get("resourceType")
    if resource_type not in _FHIR_MODELS:
        return [("resourceType", f"{resource_type!r} is not one of {', '.join(RESOURCE_TYPES)}")]
    model = _FHIR_MODELS[resource_type]
    found: list[tuple[str, str]] = []
    _check_element(data, model, "", found)
    if not found:
        try:
            model(data, strict=True)
        except FHIRValidationError as error:
            found = _flatten_fhirclient(error)
    return found


# --------------------------------------------------------------------------------------------
# Layer 2: Handoff's conventions (pydantic)


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
    if resource_id == value or not _ID_RE.fullmatch(resource_id):
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
            if not _PHONE_RE.fullmatch(value.strip()) or sum(c.isdigit() for c in value) < 7:
                raise ValueError(f"{value!r} does not look like a phone number")
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
    code = info.data.get("code")
    known = info.data.get("system") == system and code in codes
    if display is not None and known and display != codes[code]:
        raise ValueError(f"display of {code!r} must be {codes[code]!r} (or leave it out)")
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
        if not _TIME_RE.fullmatch(value):
            raise ValueError(f"{value!r} must be a time written hh:mm:ss, e.g. 08:30:00")
        return value


def _check_bound(value: str | None) -> str | None:
    if value is not None and not (_DATE_RE.fullmatch(value) or "T" in value):
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
        if not _ID_RE.fullmatch(value):
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


_CONVENTIONS: dict[str, type[_Model]] = {
    "Organization": _Organization,
    "Location": _Location,
    "HealthcareService": _HealthcareService,
}


def _pydantic_problems(error: ValidationError) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for item in error.errors():
        path = ""
        for key in item["loc"]:
            path = _join(path, key)
        if item["type"] == "missing":
            message = "required element is missing"
        elif item["type"] == "literal_error":
            message = f"{item['input']!r} is not allowed; expected {item['ctx']['expected']}"
        else:
            message = item["msg"].removeprefix("Value error, ")
        found.append((path, message))
    return found


# --------------------------------------------------------------------------------------------
# The catalog


@dataclass(frozen=True)
class Window:
    """Open on these weekdays (0 = Monday) from ``start`` to ``end`` (None: till midnight)."""

    days: tuple[int, ...]
    start: time
    end: time | None


@dataclass(frozen=True)
class Program:
    """One HealthcareService as the physician's screen and the referral see it."""

    id: str
    name: str
    organization: str
    organization_id: str
    services: tuple[str, ...]
    service_labels: tuple[str, ...]
    phone: str
    address: str | None
    hours: str
    accepting_new: bool
    telehealth: bool
    walk_in: bool
    same_day_bup: bool
    active: bool
    timezone: str
    comment: str | None = None
    availability_exceptions: str | None = None
    windows: tuple[Window, ...] = field(default=(), repr=False)
    closures: tuple[tuple[datetime, datetime | None, str], ...] = field(default=(), repr=False)

    def open_now(self, at: datetime) -> bool:
        """Whether the program is open at ``at`` in the catalog's time zone.

        An aware datetime is converted to the catalog's zone; a naive one is read as catalog
        local time. A ``notAvailable`` closure overrides the weekly hours."""
        zone = ZoneInfo(self.timezone)
        local = at.astimezone(zone) if at.tzinfo else at.replace(tzinfo=zone)
        for start, end, _reason in self.closures:
            if start <= local and (end is None or local < end):
                return False
        clock = local.time().replace(tzinfo=None)
        return any(
            local.weekday() in w.days and w.start <= clock and (w.end is None or clock < w.end)
            for w in self.windows
        )

    def reference(self) -> dict[str, str]:
        """The FHIR Reference to this program for the ServiceRequest, the Task and the note."""
        return {"reference": f"HealthcareService/{self.id}", "display": self.name}


def _clock(value: str) -> time:
    return time.fromisoformat(value)


def _windows(hours: Sequence[_AvailableTime]) -> tuple[Window, ...]:
    return tuple(
        Window(
            days=tuple(_DAYS.index(day) for day in line.daysOfWeek),
            start=time.min if line.allDay else _clock(line.availableStartTime or ""),
            end=None if line.allDay else _clock(line.availableEndTime or ""),
        )
        for line in hours
    )


def _format_clock(value: time) -> str:
    return value.strftime("%H:%M" if value.second == 0 else "%H:%M:%S")


def hours_text(windows: Sequence[Window]) -> str:
    """Weekly hours as short text, e.g. ``Mon-Fri 08:00-17:00; Sat 09:00-12:00``.

    Consecutive days with the same hours are joined into a range; days with the same hours
    that are not consecutive share one entry (``Tue, Thu 13:00-17:00``); ``Daily`` is all week."""
    per_day: list[tuple[tuple[time, time | None], ...]] = []
    for day in range(7):
        spans = {(w.start, w.end) for w in windows if day in w.days}
        if (time.min, None) in spans:
            spans = {(time.min, None)}
        per_day.append(tuple(sorted(spans, key=lambda span: (span[0], span[1] or time.max))))
    runs: dict[tuple[tuple[time, time | None], ...], list[tuple[int, int]]] = {}
    day = 0
    while day < 7:
        if not per_day[day]:
            day += 1
            continue
        last = day
        while last + 1 < 7 and per_day[last + 1] == per_day[day]:
            last += 1
        runs.setdefault(per_day[day], []).append((day, last))
        day = last + 1
    parts = []
    for spans, day_runs in runs.items():
        if day_runs == [(0, 6)]:
            days = "Daily"
        else:
            days = ", ".join(
                _DAY_LABELS[a] if a == b else f"{_DAY_LABELS[a]}-{_DAY_LABELS[b]}"
                for a, b in day_runs
            )
        times = ", ".join(
            "24 hours" if end is None else f"{_format_clock(start)}-{_format_clock(end)}"
            for start, end in spans
        )
        parts.append(f"{days} {times}")
    return "; ".join(parts) if parts else "No regular hours"


def _bound(value: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A closure bound as an aware datetime; a bare date covers that whole local day."""
    if _DATE_RE.fullmatch(value):
        day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
        return datetime.combine(day, time.min, tzinfo=zone)
    return datetime.fromisoformat(value)


def _address_text(address: _Address | None) -> str | None:
    if address is None:
        return None
    if address.text:
        return address.text
    region = " ".join(part for part in (address.state, address.postalCode) if part)
    return ", ".join(part for part in (*address.line, address.city, region) if part) or None


class Catalog:
    """A validated catalog folder: its programs (HealthcareServices) and the resources behind
    them. Build it with ``load_catalog``."""

    def __init__(
        self,
        folder: Path,
        name: str,
        timezone: str,
        programs: Sequence[Program],
        resources: dict[str, FHIRAbstractResource],
    ) -> None:
        self.folder = folder
        self.name = name
        self.timezone = timezone
        self._programs = {program.id: program for program in programs}
        self._resources = resources

    def programs(
        self,
        service: str | None = None,
        accepting_new: bool | None = None,
        open_at: datetime | None = None,
        telehealth: bool | None = None,
    ) -> list[Program]:
        """Active programs matching every filter given (None: do not filter), sorted by name.

        ``service`` is a code of SERVICE_SYSTEM; an unknown code raises ValueError so a typo in
        the app does not silently show an empty list."""
        if service is not None and service not in SERVICE_TYPES:
            raise ValueError(f"unknown service {service!r} (codes: {', '.join(SERVICE_TYPES)})")
        found = [
            program
            for program in self._programs.values()
            if program.active
            and (service is None or service in program.services)
            and (accepting_new is None or program.accepting_new == accepting_new)
            and (telehealth is None or program.telehealth == telehealth)
            and (open_at is None or program.open_now(open_at))
        ]
        return sorted(found, key=lambda program: (program.name.casefold(), program.id))

    def get(self, program_id: str) -> Program:
        """The program with this HealthcareService id (inactive ones too: old referrals name
        them). Raises KeyError when there is none."""
        try:
            return self._programs[program_id]
        except KeyError:
            raise KeyError(f"no program {program_id!r} in catalog {self.folder}") from None

    def resource(self, reference: str) -> FHIRAbstractResource:
        """The parsed fhirclient model for ``Type/id`` (e.g. ``Organization/example-otp``)."""
        return self._resources[reference]

    def counts(self) -> dict[str, int]:
        """How many resources of each type the catalog holds."""
        counts = dict.fromkeys(RESOURCE_TYPES, 0)
        for reference in self._resources:
            counts[reference.split("/", 1)[0]] += 1
        return counts


@dataclass
class _Loaded:
    file: str
    data: dict[str, Any]
    model: FHIRAbstractResource | None = None
    conventions: _Model | None = None


class _DuplicateKeys(list[str]):
    """Collects JSON object keys that appear twice (json keeps only the last silently)."""

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                self.append(key)
            result[key] = value
        return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_json(path: Path, file: str, problems: list[Problem]) -> Any:
    duplicates = _DuplicateKeys()
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text, object_pairs_hook=duplicates.hook, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        problems.append(
            Problem(
                file, "", f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            )
        )
        return None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        problems.append(Problem(file, "", f"cannot read: {error}"))
        return None
    for key in dict.fromkeys(duplicates):
        problems.append(Problem(file, "", f"key {key!r} appears twice in one object"))
    return data


def _read_settings(folder: Path, problems: list[Problem]) -> _Settings:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return _Settings()
    data = _read_json(path, SETTINGS_FILE, problems)
    if data is None:
        return _Settings()
    try:
        return _Settings.model_validate(data)
    except ValidationError as error:
        for where, message in _pydantic_problems(error):
            problems.append(Problem(SETTINGS_FILE, where, message))
        return _Settings()


def _validate_file(path: Path, file: str, problems: list[Problem]) -> _Loaded | None:
    data = _read_json(path, file, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(
            Problem(file, "", f"expected one FHIR resource (a JSON object), got {_json_type(data)}")
        )
        return None
    structural = fhir_problems(data)
    for where, message in structural:
        problems.append(Problem(file, where, message))
    resource_type = data.get("resourceType")
    if resource_type not in _CONVENTIONS:
        return None
    loaded = _Loaded(file, data)
    if not structural:
        loaded.model = _FHIR_MODELS[resource_type](data, strict=True)
    try:
        loaded.conventions = _CONVENTIONS[resource_type].model_validate(data)
    except ValidationError as error:
        for where, message in _pydantic_problems(error):
            if not any(_within(where, reported) for reported, _ in structural):
                problems.append(Problem(file, where, message))
    return loaded


def _check_references(loaded: list[_Loaded], problems: list[Problem]) -> None:
    """Every reference between catalog resources names a resource in the catalog."""
    ids: dict[str, list[str]] = {"Organization": [], "Location": []}
    for item in loaded:
        kind, resource_id = item.data.get("resourceType"), item.data.get("id")
        if kind in ids and isinstance(resource_id, str):
            ids[kind].append(resource_id)

    def check(item: _Loaded, where: str, value: Any, kind: str) -> None:
        reference = value.get("reference") if isinstance(value, dict) else None
        if not isinstance(reference, str) or not reference.startswith(kind + "/"):
            return  # a wrong shape is already reported by the conventions
        if reference.removeprefix(kind + "/") not in ids[kind]:
            known = ", ".join(ids[kind]) or "none"
            problems.append(
                Problem(
                    item.file,
                    _join(where, "reference"),
                    f"{reference} is not in the catalog (known {kind} ids: {known})",
                )
            )

    for item in loaded:
        kind, data = item.data.get("resourceType"), item.data
        if kind == "HealthcareService":
            check(item, "providedBy", data.get("providedBy"), "Organization")
            locations = data.get("location")
            for index, value in enumerate(locations if isinstance(locations, list) else []):
                check(item, _join("location", index), value, "Location")
        elif kind == "Organization":
            check(item, "partOf", data.get("partOf"), "Organization")
        elif kind == "Location":
            check(item, "managingOrganization", data.get("managingOrganization"), "Organization")


def _check_unique_ids(loaded: list[_Loaded], problems: list[Problem]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for item in loaded:
        key = (item.data.get("resourceType"), item.data.get("id"))
        if not isinstance(key[1], str):
            continue
        if key in seen:
            problems.append(
                Problem(item.file, "id", f"duplicate {key[0]} id {key[1]!r} (also in {seen[key]})")
            )
        else:
            seen[key] = item.file


def _program(
    service: _HealthcareService,
    organizations: dict[str, _Organization],
    locations: dict[str, _Location],
    timezone: str,
) -> Program:
    assert service.providedBy is not None and service.providedBy.reference is not None
    organization = organizations[service.providedBy.reference.removeprefix("Organization/")]
    services = service.codes(service.type, SERVICE_SYSTEM)
    traits = service.codes(service.characteristic, CHARACTERISTIC_SYSTEM)
    phone = next(p.value for p in service.telecom if p.system == "phone" and p.value)
    places = [
        locations[ref.reference.removeprefix("Location/")]
        for ref in service.location
        if ref.reference
    ]
    windows = _windows(service.availableTime)
    zone = ZoneInfo(timezone)
    closures = tuple(
        (
            _bound(gap.during.start, zone, end=False),
            _bound(gap.during.end, zone, end=True) if gap.during.end else None,
            gap.description or "",
        )
        for gap in service.notAvailable
        if gap.during is not None and gap.during.start is not None
    )
    return Program(
        id=service.id,
        name=service.name,
        organization=organization.name,
        organization_id=organization.id,
        services=tuple(services),
        service_labels=tuple(SERVICE_TYPES[code] for code in services),
        phone=phone,
        address=_address_text(places[0].address) if places else None,
        hours=hours_text(windows),
        accepting_new="accepting-new-patients" in traits,
        telehealth="telehealth" in traits or "telehealth" in services,
        walk_in=service.appointmentRequired is False,
        same_day_bup="same-day-bup" in traits,
        active=service.active is not False and organization.active is not False,
        timezone=timezone,
        comment=service.comment,
        availability_exceptions=service.availabilityExceptions,
        windows=windows,
        closures=closures,
    )


def _check_closures(loaded: list[_Loaded], timezone: str, problems: list[Problem]) -> None:
    """Closure periods parse and end after they start."""
    zone = ZoneInfo(timezone)
    for item in loaded:
        if not isinstance(item.conventions, _HealthcareService):
            continue
        for index, gap in enumerate(item.conventions.notAvailable):
            if gap.during is None or gap.during.start is None or gap.during.end is None:
                continue
            try:
                start = _bound(gap.during.start, zone, end=False)
                end = _bound(gap.during.end, zone, end=True)
            except ValueError:
                continue  # malformed dateTime is already reported by the FHIR check
            if end <= start:
                problems.append(
                    Problem(
                        item.file,
                        f"notAvailable[{index}].during.end",
                        "the closure ends before it starts",
                    )
                )


def load_catalog(folder: str | Path) -> Catalog:
    """Load and validate a catalog folder (every ``*.json`` below it, one FHIR resource each,
    plus the optional ``catalog.json`` settings). Raises CatalogError listing every problem."""
    root = Path(folder)
    if not root.is_dir():
        raise CatalogError(root, [Problem(str(root), "", "catalog folder not found")])
    problems: list[Problem] = []
    settings = _read_settings(root, problems)
    loaded: list[_Loaded] = []
    for path in sorted(root.rglob("*.json")):
        relative = path.relative_to(root)
        if relative == Path(SETTINGS_FILE) or any(p.startswith(".") for p in relative.parts):
            continue
        item = _validate_file(path, relative.as_posix(), problems)
        if item is not None:
            loaded.append(item)
    _check_unique_ids(loaded, problems)
    _check_references(loaded, problems)
    _check_closures(loaded, settings.timezone, problems)
    if not any(item.data.get("resourceType") == "HealthcareService" for item in loaded):
        problems.append(Problem(".", "", "the catalog has no HealthcareService (no programs)"))
    if problems:
        raise CatalogError(root, sorted(problems, key=lambda problem: problem.file))

    checked = [item.conventions for item in loaded if isinstance(item.conventions, _Resource)]
    organizations = {r.id: r for r in checked if isinstance(r, _Organization)}
    locations = {r.id: r for r in checked if isinstance(r, _Location)}
    programs = [
        _program(r, organizations, locations, settings.timezone)
        for r in checked
        if isinstance(r, _HealthcareService)
    ]
    resources = {f"{i.data['resourceType']}/{i.data['id']}": i.model for i in loaded if i.model}
    return Catalog(root, settings.name or root.name, settings.timezone, programs, resources)


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """``check FOLDER``: validate and print counts (exit 0) or every problem (exit 2).
    ``list FOLDER``: print the programs as the physician's screen would list them."""
    parser = argparse.ArgumentParser(
        prog="python -m smartapp.catalog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a catalog folder")
    check.add_argument("folder", type=Path)
    listing = commands.add_parser("list", help="list the programs of a catalog folder")
    listing.add_argument("folder", type=Path)
    listing.add_argument("--service", choices=sorted(SERVICE_TYPES))
    listing.add_argument("--open-now", action="store_true", help="only programs open now")
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog(args.folder)
    except CatalogError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "check":
        counts = catalog.counts()
        print(
            f"OK {args.folder}: {counts['HealthcareService']} programs (HealthcareService), "
            f"{counts['Organization']} Organization, {counts['Location']} Location; "
            f"time zone {catalog.timezone}"
        )
        return 0
    open_at = datetime.now(ZoneInfo(catalog.timezone)) if args.open_now else None
    for program in catalog.programs(service=args.service, open_at=open_at):
        flags = [
            label
            for flag, label in (
                (program.accepting_new, "accepting new patients"),
                (program.walk_in, "walk-in"),
                (program.telehealth, "telehealth"),
                (program.same_day_bup, "same-day bup"),
            )
            if flag
        ]
        print(
            f"{program.id}: {program.name} ({program.organization})\n"
            f"    {', '.join(program.service_labels)}\n"
            f"    {program.phone} | {program.address or 'no street address'} | "
            f"{program.hours}\n    {', '.join(flags) or '-'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
