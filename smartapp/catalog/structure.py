"""Layer 1 of the catalog checks: FHIR R4 structure, from fhirclient's R4 model definitions.

Unknown elements, wrong JSON types, malformed dates and times and missing required elements are
all reported (fhirclient's own parser stops at the first); a resource without problems is then
parsed with its fhirclient model."""

from __future__ import annotations

import difflib
from typing import Any

from fhirclient.models import fhirdate, fhirdatetime, fhirinstant, fhirtime
from fhirclient.models.fhirabstractbase import FHIRAbstractBase, FHIRValidationError
from fhirclient.models.fhirabstractresource import FHIRAbstractResource
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from fhirclient.models.healthcareservice import HealthcareService
from fhirclient.models.location import Location
from fhirclient.models.organization import Organization
from fhirclient.models.resource import Resource

from smartapp.catalog.codes import RESOURCE_TYPES
from smartapp.catalog.problems import join_path

FHIR_MODELS: dict[str, type[FHIRAbstractResource]] = {
    "Organization": Organization,
    "Location": Location,
    "HealthcareService": HealthcareService,
}

_FHIR_TIME_KINDS: tuple[tuple[type, str], ...] = (
    (fhirtime.FHIRTime, "time (hh:mm:ss)"),
    (fhirinstant.FHIRInstant, "instant (YYYY-MM-DDThh:mm:ss+zz:zz)"),
    (fhirdatetime.FHIRDateTime, "dateTime (YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss+zz:zz)"),
    (fhirdate.FHIRDate, "date (YYYY-MM-DD)"),
)


def json_type(value: Any) -> str:
    """The JSON type of a value in words, for a message (``a string``, ``an array``)."""
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
            out.append((path, f"expected a FHIR {kind} string, got {json_type(value)}"))
            return
        try:
            typ(value)
        except (TypeError, ValueError):
            out.append((path, f"{value!r} is not a valid FHIR {kind}"))
    elif typ is bool:
        if not isinstance(value, bool):
            out.append((path, f"expected true or false, got {json_type(value)}"))
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            out.append((path, f"expected an integer, got {json_type(value)}"))
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append((path, f"expected a number, got {json_type(value)}"))
    elif typ is str:
        if not isinstance(value, str):
            out.append((path, f"expected a string, got {json_type(value)}"))
        elif not value.strip():
            out.append((path, "empty string is not allowed in FHIR (leave the element out)"))


def _check_element(
    data: Any, cls: type[FHIRAbstractBase], path: str, out: list[tuple[str, str]]
) -> None:
    """Check a JSON object against a FHIR R4 element or resource definition, collecting every
    problem (fhirclient's own parser stops at the first bad item of each list)."""
    if not isinstance(data, dict):
        out.append((path, f"expected an object, got {json_type(data)}"))
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
                out.append((join_path(path, jsname), "required element is missing"))
            continue
        value, where = data[jsname], join_path(path, jsname)
        if is_list:
            if not isinstance(value, list):
                out.append((where, f"expected an array, got {json_type(value)}"))
            elif not value:
                out.append((where, "empty array is not allowed in FHIR (leave the element out)"))
            else:
                for index, item in enumerate(value):
                    _check_value(item, typ, join_path(where, index), out)
        elif isinstance(value, list):
            out.append((where, "expected a single value, not an array"))
        else:
            _check_value(value, typ, where, out)
    for of_many in sorted(required_choices - set(choices)):
        out.append((join_path(path, of_many + "[x]"), "required element is missing"))
    for of_many, present in choices.items():
        if len(present) > 1:
            out.append((join_path(path, of_many + "[x]"), f"only one of {', '.join(present)}"))
    label = getattr(cls, "resource_type", cls.__name__)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            message = f"unknown element: not part of FHIR R4 {label}{hint}"
            out.append((join_path(path, key), message))


def _flatten_fhirclient(error: Exception, path: str = "") -> list[tuple[str, str]]:
    """Paths and messages out of fhirclient's nested FHIRValidationError (a fallback)."""
    if isinstance(error, FHIRValidationError):
        here = join_path(path, error.path) if error.path else path
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
    if resource_type not in FHIR_MODELS:
        return [("resourceType", f"{resource_type!r} is not one of {', '.join(RESOURCE_TYPES)}")]
    model = FHIR_MODELS[resource_type]
    found: list[tuple[str, str]] = []
    _check_element(data, model, "", found)
    if not found:
        try:
            model(data, strict=True)
        except FHIRValidationError as error:
            found = _flatten_fhirclient(error)
    return found
