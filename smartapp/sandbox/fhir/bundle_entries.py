"""Entries of a transaction or batch Bundle, parsed and checked (pure), and bundle-local
references (urn:uuid:..., fullUrls) rewritten to Type/id."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from smartapp.sandbox.fhir.errors import FhirError


@dataclass
class BundleEntry:
    """A parsed bundle entry."""

    index: int
    method: str
    rtype: str | None
    rid: str | None
    vid: str | None
    query: str
    compartment: str | None
    resource: dict | None
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    existing: tuple[dict, str | None] | None = None


def parse_entry(index: int, entry: object, fhir_base: str) -> BundleEntry:
    """One entry of a transaction or batch, checked: method, url, resource (400/405 else)."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise FhirError(400, f"{where}: entry.request is required", "required", expression=where)
    request = entry["request"]
    method = str(request.get("method", "")).upper()
    if method not in ("GET", "POST", "PUT", "DELETE"):
        raise FhirError(
            405 if method in ("PATCH", "HEAD") else 400,
            f"{where}: method '{method}' is not supported",
            "not-supported",
            expression=where,
        )
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise FhirError(400, f"{where}: request.url is required", "required", expression=where)
    parts = urlsplit(url)
    rtype, rid, vid, compartment = _target(url, fhir_base, where)
    resource = entry.get("resource")
    _check_target(method, rid, resource, url, where)
    return BundleEntry(
        index=index,
        method=method,
        rtype=rtype,
        rid=rid,
        vid=vid,
        query=parts.query,
        compartment=compartment,
        resource=resource,
        full_url=entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None,
        if_none_exist=request.get("ifNoneExist"),
        if_match=request.get("ifMatch"),
    )


def _target(url: str, fhir_base: str, where: str) -> tuple[str, str | None, str | None, str | None]:
    """(type, id, version id, compartment patient) of an entry's url: Type, Type/id,
    Type/id/_history/vid or Patient/id/Type, relative or absolute on this server."""
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme:
        if not url.startswith(fhir_base + "/"):
            raise FhirError(400, f"{where}: {url} is not on this server", expression=where)
        path = urlsplit(url[len(fhir_base) :]).path
    segments = [s for s in path.split("/") if s]
    rtype = segments[0] if segments else None
    rid = vid = compartment = None
    if len(segments) == 2:
        rid = segments[1]
    elif len(segments) == 3 and segments[0] == "Patient":
        compartment, rtype = segments[1], segments[2]
    elif len(segments) == 4 and segments[2] == "_history":
        rid, vid = segments[1], segments[3]
    elif len(segments) != 1:
        raise FhirError(400, f"{where}: cannot interpret url '{url}'", expression=where)
    if rtype is None:
        raise FhirError(400, f"{where}: url '{url}' names no resource type", expression=where)
    return rtype, rid, vid, compartment


def _check_target(method: str, rid: str | None, resource: object, url: str, where: str) -> None:
    """POST to a type with a resource, PUT to Type/id with a resource, DELETE of Type/id."""
    if method in ("POST", "PUT"):
        if resource is None:
            raise FhirError(
                400, f"{where}: {method} needs a resource", "required", expression=where
            )
        if method == "POST" and rid is not None:
            raise FhirError(400, f"{where}: POST goes to a type, not to '{url}'", expression=where)
        if method == "PUT" and rid is None:
            raise FhirError(
                400,
                f"{where}: PUT needs Type/id (conditional update is not supported)",
                "not-supported",
                expression=where,
            )
    if method == "DELETE" and rid is None:
        raise FhirError(400, f"{where}: DELETE needs Type/id", "not-supported", expression=where)


def rewrite_references(node: object, refmap: dict[str, str]) -> None:
    """Replace bundle-local references (urn:uuid:..., fullUrls) by Type/id, in place."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in refmap:
            node["reference"] = refmap[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                rewrite_references(value, refmap)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                rewrite_references(value, refmap)
