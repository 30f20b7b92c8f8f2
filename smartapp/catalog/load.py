"""Loading a catalog folder: read every JSON file (duplicate keys and NaN refused), check each
against FHIR R4 structure and Handoff's conventions, then across files (unique ids, references
that resolve, closures that end after they start), and build the Catalog. Every problem is
reported at once, in a CatalogError."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fhirclient.models.fhirabstractresource import FHIRAbstractResource
from pydantic import ValidationError

from smartapp.catalog.codes import SETTINGS_FILE
from smartapp.catalog.conventions import (
    CONVENTIONS,
    _HealthcareService,
    _Location,
    _Model,
    _Organization,
    _Resource,
    _Settings,
    pydantic_problems,
)
from smartapp.catalog.hours import closure_bound
from smartapp.catalog.problems import CatalogError, Problem, join_path, within
from smartapp.catalog.programs import Catalog, program_of
from smartapp.catalog.structure import FHIR_MODELS, fhir_problems, json_type


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
        for where, message in pydantic_problems(error):
            problems.append(Problem(SETTINGS_FILE, where, message))
        return _Settings()


def _validate_file(path: Path, file: str, problems: list[Problem]) -> _Loaded | None:
    data = _read_json(path, file, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(
            Problem(file, "", f"expected one FHIR resource (a JSON object), got {json_type(data)}")
        )
        return None
    structural = fhir_problems(data)
    for where, message in structural:
        problems.append(Problem(file, where, message))
    resource_type = data.get("resourceType")
    if resource_type not in CONVENTIONS:
        return None
    loaded = _Loaded(file, data)
    if not structural:
        loaded.model = FHIR_MODELS[resource_type](data, strict=True)
    try:
        loaded.conventions = CONVENTIONS[resource_type].model_validate(data)
    except ValidationError as error:
        for where, message in pydantic_problems(error):
            if not any(within(where, reported) for reported, _ in structural):
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
                    join_path(where, "reference"),
                    f"{reference} is not in the catalog (known {kind} ids: {known})",
                )
            )

    for item in loaded:
        kind, data = item.data.get("resourceType"), item.data
        if kind == "HealthcareService":
            check(item, "providedBy", data.get("providedBy"), "Organization")
            locations = data.get("location")
            for index, value in enumerate(locations if isinstance(locations, list) else []):
                check(item, join_path("location", index), value, "Location")
        elif kind == "Organization":
            check(item, "partOf", data.get("partOf"), "Organization")
        elif kind == "Location":
            check(item, "managingOrganization", data.get("managingOrganization"), "Organization")


def _check_unique_ids(loaded: list[_Loaded], problems: list[Problem]) -> None:
    """No two resources of a type share an id (the later file is named)."""
    seen: dict[tuple[str, str], str] = {}
    for item in loaded:
        kind, resource_id = item.data.get("resourceType"), item.data.get("id")
        if not isinstance(kind, str) or not isinstance(resource_id, str):
            continue  # loaded resources have a known type; an id that is no string is reported
        key = (kind, resource_id)
        if key in seen:
            problems.append(
                Problem(item.file, "id", f"duplicate {key[0]} id {key[1]!r} (also in {seen[key]})")
            )
        else:
            seen[key] = item.file


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
                start = closure_bound(gap.during.start, zone, end=False)
                end = closure_bound(gap.during.end, zone, end=True)
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
        program_of(r, organizations, locations, settings.timezone)
        for r in checked
        if isinstance(r, _HealthcareService)
    ]
    resources = {f"{i.data['resourceType']}/{i.data['id']}": i.model for i in loaded if i.model}
    return Catalog(root, settings.name or root.name, settings.timezone, programs, resources)
