"""The index values a resource gives its search parameters (`params`), and the patients whose
compartment holds it: evaluate element paths, extract tokens, references, dates, strings."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from smartapp.sandbox.fhir.params import (
    PARAMS_BY_NAME,
    IndexRow,
    SearchParam,
    compile_path,
    params_for_type,
)
from smartapp.sandbox.fhir.resource_types import PATIENT_COMPARTMENT_TYPES, R4_RESOURCE_TYPES
from smartapp.sandbox.fhirtime import MAX_MS, MIN_MS, parse_range


def evaluate(resource: dict, path: tuple[tuple[str, bool], ...]) -> list[object]:
    """Values at a compiled path, lists flattened."""
    current: list[object] = [resource]
    for name, choice in path:
        found: list[object] = []
        for item in current:
            if not isinstance(item, dict):
                continue
            if choice:
                size = len(name)
                for key, value in item.items():
                    if key.startswith(name) and len(key) > size and key[size].isupper():
                        _extend(found, value)
            elif name in item:
                _extend(found, item[name])
        current = found
        if not current:
            break
    return current


def _extend(into: list[object], value: object) -> None:
    if isinstance(value, list):
        into.extend(value)
    else:
        into.append(value)


def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form used for string search."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


_REF_RE = re.compile(r"^(?:(.*)/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def split_reference(reference: str, local_base: str) -> tuple[str | None, str]:
    """(type, id) of a local reference; (None, reference) for contained, urn or foreign URLs."""
    if reference.startswith(("#", "urn:")):
        return None, reference
    match = _REF_RE.match(reference)
    if not match or match.group(2) not in R4_RESOURCE_TYPES:
        return None, reference
    prefix = match.group(1)
    if prefix is not None and prefix.rstrip("/") != local_base.rstrip("/"):
        return None, reference
    return match.group(2), match.group(3)


def _tokens(value: object) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, str):
        yield None, value
    elif isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or ():
                if isinstance(coding, dict) and coding.get("code"):
                    yield coding.get("system"), str(coding["code"])
        elif "code" in value:
            if value.get("code") is not None:
                yield value.get("system"), str(value["code"])
        elif "value" in value and isinstance(value.get("value"), str):
            yield value.get("system"), value["value"]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in (
            "text",
            "family",
            "given",
            "prefix",
            "suffix",
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
        ):
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


def _date_range(value: object) -> tuple[int, int] | None:
    if isinstance(value, str):
        return parse_range(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):
        start = parse_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = parse_range(value["end"]) if isinstance(value.get("end"), str) else None
        return (start[0] if start else MIN_MS, end[1] if end else MAX_MS)
    return None


def extract(param: SearchParam, rtype: str, resource: dict, local_base: str) -> list[IndexRow]:
    """Index rows for one parameter on one resource."""
    rows: list[IndexRow] = []
    for path in param.paths_for(rtype):
        for value in evaluate(resource, path):
            if param.kind == "token":
                rows.extend((param.name, sys, code, None, None) for sys, code in _tokens(value))
            elif param.kind == "reference":
                ref = value.get("reference") if isinstance(value, dict) else None
                if not isinstance(ref, str):
                    continue
                target, ident = split_reference(ref, local_base)
                if param.targets and target not in param.targets:
                    continue
                rows.append((param.name, target, ident, None, None))
            elif param.kind == "date":
                rng = _date_range(value)
                if rng:
                    rows.append((param.name, None, None, rng[0], rng[1]))
            elif param.kind == "string":
                rows.extend(
                    (param.name, None, normalize_string(s), None, None) for s in _strings(value)
                )
            elif param.kind == "uri" and isinstance(value, str):
                rows.append((param.name, None, value, None, None))
    return rows


def index_rows(rtype: str, resource: dict, local_base: str) -> list[IndexRow]:
    """All index rows for a resource (deduplicated)."""
    rows: list[IndexRow] = []
    for param in params_for_type(rtype):
        rows.extend(extract(param, rtype, resource, local_base))
    return list(dict.fromkeys(rows))


def compartment_patients(rtype: str, resource: dict, local_base: str) -> list[str]:
    """Ids of the patients whose compartment holds this resource, per the `patient` row.

    A Provenance names its patient only through its targets; the store resolves those.
    """
    if rtype == "Patient":
        return [resource["id"]] if resource.get("id") else []
    if rtype not in PATIENT_COMPARTMENT_TYPES:
        return []
    param = PARAMS_BY_NAME["patient"]
    paths = param.compiled.get(rtype) or tuple(
        compile_path(p) for p in ("subject", "patient", "for", "beneficiary")
    )
    found: list[str] = []
    for path in paths:
        for value in evaluate(resource, path):
            ref = value.get("reference") if isinstance(value, dict) else None
            if isinstance(ref, str):
                target, ident = split_reference(ref, local_base)
                if target == "Patient" and ident not in found:
                    found.append(ident)
    return found
