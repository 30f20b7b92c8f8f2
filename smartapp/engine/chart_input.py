"""Reading a chart's input: Bundles (nested ones flattened) and lists of resources, checked,
with their fullUrls, and the canonical key each resource gets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .chart_types import BUNDLE_TYPES, ChartError, ChartItem
from .fhir import type_id_of

_MISSING: Any = object()


def bundle_items(bundle: Any) -> list[ChartItem]:
    """The resources of a Bundle (nested Bundles flattened), checked, with their fullUrls."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        found = bundle.get("resourceType") if isinstance(bundle, dict) else None
        found = found or type(bundle).__name__
        raise ChartError(f"chart: expected a FHIR Bundle, got {found!r}")
    return list(_bundle_resources(bundle, "Bundle"))


def resource_items(resources: Iterable[Any]) -> list[ChartItem]:
    """Checked items of a list of resources (a Bundle among them is read entry by entry)."""
    if isinstance(resources, dict | str | bytes):
        raise ChartError("chart: expected a list of FHIR resources")
    items: list[ChartItem] = []
    for i, resource in enumerate(resources):
        where = f"resources[{i}]"
        _check_resource(resource, where)
        if resource["resourceType"] == "Bundle":
            items.extend(_bundle_resources(resource, where))
        else:
            items.append((None, resource, where))
    return items


def resource_key(resource: dict[str, Any], full_url: str | None, where: str) -> str:
    """The canonical key (``Type/id``) a checked resource gets in a chart."""
    return key_of(resource, full_url, where)


def _check_resource(resource: Any, where: str) -> None:
    """A resource must be a JSON object with a resourceType."""
    if not isinstance(resource, dict):
        found = type(resource).__name__
        raise ChartError(f"{where}: expected a FHIR resource (object), got {found}")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise ChartError(f"{where}: resource has no resourceType")
    if "id" in resource and not isinstance(resource["id"], str):
        raise ChartError(f"{where}: {rtype}.id must be a string")


def _bundle_resources(bundle: dict[str, Any], where: str) -> Iterator[ChartItem]:
    """Yield (fullUrl, resource, location) of every entry, flattening nested Bundles."""
    btype = bundle.get("type")
    if btype not in BUNDLE_TYPES:
        allowed = ", ".join(sorted(BUNDLE_TYPES))
        raise ChartError(f"{where}: unsupported Bundle type {btype!r} (expected one of {allowed})")
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next":
            raise ChartError(f"{where}: searchset is incomplete (it has a 'next' page link)")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise ChartError(f"{where}.entry: expected a list")
    for i, entry in enumerate(entries):
        here = f"{where}.entry[{i}]"
        if not isinstance(entry, dict):
            raise ChartError(f"{here}: expected an object")
        if "response" in entry:
            _check_response(entry, here)
        resource = entry.get("resource", _MISSING)
        if resource is _MISSING:
            raise ChartError(f"{here}: entry has no resource")
        # the common case checked inline (this runs once per resource of every chart)
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(rtype, str) or not rtype or not isinstance(resource.get("id", ""), str):
            _check_resource(resource, f"{here}.resource")
        if rtype == "Bundle":
            yield from _bundle_resources(resource, f"{here}.resource")
        else:
            full_url = entry.get("fullUrl")
            yield (full_url if isinstance(full_url, str) else None), resource, here


def _check_response(entry: dict[str, Any], where: str) -> None:
    """A failed read in a batch means missing data: refuse rather than under-read."""
    response = entry.get("response")
    if not isinstance(response, dict):
        return
    status = str(response.get("status", "")).strip()
    if status and not status.startswith("2"):
        raise ChartError(f"{where}: batch entry failed with status {status!r}")


def check_outcome(outcome: dict[str, Any], where: str) -> None:
    """An OperationOutcome with an error or fatal issue means a failed search."""
    issues = outcome.get("issue")
    for issue in issues if isinstance(issues, list) else ():
        if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
            text = str(issue.get("diagnostics") or issue.get("code") or "error")
            if len(text) > 200:  # the EHR's words, shown on an error page: bounded
                text = text[:200] + "…"
            raise ChartError(f"{where}: OperationOutcome reports an error: {text}")


def key_of(resource: dict[str, Any], full_url: str | None, where: str) -> str:
    """``Type/id`` of a resource, from its id or, lacking one, from its fullUrl."""
    rtype = resource["resourceType"]
    if resource.get("id"):
        return f"{rtype}/{resource['id']}"
    if full_url and full_url.startswith("urn:uuid:"):
        return f"{rtype}/{full_url[len('urn:uuid:') :]}"
    tail = type_id_of(full_url) if full_url else None
    if tail and tail.startswith(rtype + "/"):
        return tail
    raise ChartError(f"{where}: {rtype} has no id and no usable fullUrl")
