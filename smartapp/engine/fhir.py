"""Small readers for FHIR R4 data types the engine needs: dates, codings, references.

Pure functions over plain dicts; nothing here knows about rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

_DATETIME_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
#: ``2026-11-20T15:00:00+01:00`` or ``...Z``: what ``datetime.fromisoformat`` reads exactly
#: as the general parser below does (ASCII digits only), ten times faster.
_FULL_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})\Z", re.ASCII
)
#: ``2026-11-20``: a date, read here as the general parser reads it, without its regex.
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z", re.ASCII)

#: Choice-type prefixes of the elements that carry a resource's clinical time.
CLINICAL_TIME_FIELDS: dict[str, tuple[str, ...]] = {
    "Condition": ("onset", "recordedDate"),
    "Observation": ("effective",),
    "MedicationStatement": ("effective",),
    "MedicationAdministration": ("effective",),
    "MedicationRequest": ("authoredOn",),
    "ServiceRequest": ("authoredOn",),
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "AllergyIntolerance": ("onset",),
}


#: Texts parsed already (a chart's times repeat: a visit's observations share its time;
#: a backtest reads millions). Emptied when it reaches _PARSED_MAX entries.
_PARSED: dict[str, datetime | None] = {}
_PARSED_MAX = 1 << 16


def parse_datetime(value: Any) -> datetime | None:
    """Parse a FHIR date, dateTime or instant into an aware datetime.

    Partial dates (``2026``, ``2026-11``) mean their first instant; a value with no time
    zone is read as UTC. Anything unparseable gives None (the resource then has no time).
    """
    if value.__class__ is not str:
        return _parsed(value) if isinstance(value, str) else None
    try:
        return _PARSED[value]
    except KeyError:
        pass
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    found = _PARSED[value] = _parsed(value)
    return found


def _parsed(value: str) -> datetime | None:
    """parse_datetime of a text, worked out."""
    if _FULL_DATETIME_RE.match(value):  # the common shape: the C parser, same result
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    if _DATE_RE.match(value):  # a date (a birthDate): what the general parser makes of it
        try:
            return datetime(int(value[:4]), int(value[5:7]), int(value[8:10]), tzinfo=UTC)
        except ValueError:
            return None
    m = _DATETIME_RE.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        tz = _parse_zone(zone)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        return None


def _parse_zone(zone: str | None) -> timezone:
    """Turn ``Z`` / ``+hh:mm`` / nothing into a tzinfo (nothing means UTC)."""
    if zone is None or zone == "Z":
        return UTC
    sign = 1 if zone[0] == "+" else -1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def youngest_birth_date(value: Any) -> date | None:
    """The latest day a (possibly partial) FHIR birthDate can stand for.

    ``1990`` gives 1990-12-31 and ``1990-06`` gives 1990-06-30, so an age computed from it
    is the youngest the patient can be: an age threshold is never passed on a guess.
    """
    start = parse_datetime(value)
    if start is None or not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) == 4:
        return date(start.year, 12, 31)
    if len(text) == 7:
        first_of_next = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        return first_of_next - timedelta(days=1)
    return start.date()


def age_in_years(birth: date, on: date) -> int:
    """Whole years from ``birth`` to ``on`` (a birthday on 29 Feb counts from 1 March)."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years


def choice_time(resource: dict[str, Any], prefix: str) -> datetime | None:
    """Read a time from a choice element (``onsetDateTime``, ``effectivePeriod.start``...)."""
    if prefix in resource:  # plain element such as authoredOn
        return parse_datetime(resource[prefix])
    for suffix in ("DateTime", "Instant"):
        if prefix + suffix in resource:
            return parse_datetime(resource[prefix + suffix])
    period = resource.get(prefix + "Period")
    if isinstance(period, dict):
        return parse_datetime(period.get("start"))
    return None


def clinical_time(resource: dict[str, Any]) -> datetime | None:
    """The time a resource is about (onset, effective, authored, handed over), or None."""
    for prefix in CLINICAL_TIME_FIELDS.get(resource.get("resourceType", ""), ()):
        found = choice_time(resource, prefix)
        if found is not None:
            return found
    return None


def codings(concept: Any) -> Iterator[tuple[str, str]]:
    """Yield (system, code) of each coding of a CodeableConcept that has both."""
    if not isinstance(concept, dict):
        return
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                yield system, code


def coding_tuple(concept: Any) -> tuple[tuple[str, str], ...]:
    """``tuple(codings(concept))``, faster: this runs once per resource of every chart."""
    if not isinstance(concept, dict):
        return ()
    found = concept.get("coding")
    if not found:
        return ()
    out = []
    for coding in found:
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                out.append((system, code))
    return tuple(out)


def status_code(value: Any) -> str | None:
    """A status as a code: plain ``status`` strings, or the first code of a CodeableConcept."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for coding in value.get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return coding["code"]
    return None


def reference_string(value: Any) -> str | None:
    """The ``reference`` of a Reference element, if it has one."""
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return value["reference"].strip() or None
    return None


_TYPE_ID_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def type_id_of(reference: str) -> str | None:
    """``Type/id`` from a relative or absolute reference (``.../Condition/1/_history/2``)."""
    if reference.startswith(("urn:", "#")):
        return None
    m = _TYPE_ID_TAIL.search(reference)
    return f"{m.group(1)}/{m.group(2)}" if m else None


#: Units of a Quantity or Duration read as a length of time (UCUM codes and plain words).
_TIME_UNITS: dict[str, timedelta] = {
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "hour": timedelta(hours=1),
    "hours": timedelta(hours=1),
    "d": timedelta(days=1),
    "day": timedelta(days=1),
    "days": timedelta(days=1),
    "wk": timedelta(weeks=1),
    "week": timedelta(weeks=1),
    "weeks": timedelta(weeks=1),
    "mo": timedelta(days=30),
    "month": timedelta(days=30),
    "months": timedelta(days=30),
}


def quantity_duration(value: Any) -> timedelta | None:
    """A Quantity or Duration (``daysSupply``, ``expectedSupplyDuration``) as a timedelta.

    The UCUM ``code`` decides, else the ``unit`` text; with neither, days (a supply is
    counted in days). None when there is no non-negative number or the unit is not a time.
    """
    if not isinstance(value, dict):
        return None
    number = value.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
        return None
    unit = value.get("code") or value.get("unit") or "d"
    step = _TIME_UNITS.get(str(unit).strip().lower())
    return None if step is None else step * number


#: Where each medication type records the length of its supply.
_SUPPLY_ELEMENTS: dict[str, tuple[str, ...]] = {
    "MedicationDispense": ("daysSupply",),
    "MedicationRequest": ("dispenseRequest", "expectedSupplyDuration"),
}


def supply_length(resource: dict[str, Any]) -> timedelta | None:
    """How long a dispense (``daysSupply``) or an order (``expectedSupplyDuration``) lasts."""
    path = _SUPPLY_ELEMENTS.get(resource.get("resourceType", ""))
    value: Any = resource
    for name in path or ():
        value = value.get(name) if isinstance(value, dict) else None
    return quantity_duration(value) if path else None


def effective_end(resource: dict[str, Any]) -> datetime | None:
    """The end of a statement's or an administration's ``effectivePeriod``, if it has one."""
    period = resource.get("effectivePeriod")
    return parse_datetime(period.get("end")) if isinstance(period, dict) else None
