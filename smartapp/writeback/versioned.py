"""Versioned updates: read-modify-write with `If-Match`, never overwriting another party.

`put_change` PUTs our change applied to the version it was based on, with
`If-Match: W/"<that version>"`. On 412 (or 409) the EHR holds a newer version: it re-reads,
and either finds our change already there (our earlier PUT landed but its answer was lost, a
connection cut after the commit) and writes nothing more, or re-applies *our* change (only the
fields it sets) onto the newest version and PUTs again with that version. So an update lands
exactly once, and what another party wrote meanwhile stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smartapp.fhir.client import FhirClient, FhirError
from smartapp.writeback.task_update import same_content

# Rounds of re-read and re-apply before giving up for now (retried later, with backoff).
MAX_ROUNDS = 4
HISTORY_COUNT = 50  # versions read back to find whether our earlier PUT landed

Merge = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Version:
    """A resource as the EHR holds it, and its versionId (None where the EHR gave none)."""

    resource: dict[str, Any]
    version: str | None


@dataclass(frozen=True)
class Landed:
    """Where our change is at the EHR: the version that shows it, and how it got there."""

    resource: dict[str, Any]
    version: str | None
    http: str


def version_of(resource: dict[str, Any], etag: str | None = None) -> str | None:
    """The versionId of a resource (meta.versionId, else the ETag's W/"..")."""
    found = (resource.get("meta") or {}).get("versionId")
    if found:
        return str(found)
    if etag:
        return etag.removeprefix("W/").strip('"') or None
    return None


def read(client: FhirClient, rtype: str, rid: str) -> Version:
    """GET the resource's newest version."""
    body = client.get(f"{rtype}/{rid}")
    return Version(body, version_of(body))


def put(client: FhirClient, resource: dict[str, Any], version: str | None) -> Version:
    """PUT with `If-Match` on `version` (none when unknown); the version it wrote (None
    where the EHR's answer does not say: the next change then reads the newest first)."""
    body = _for_put(resource)
    if version is None:  # the EHR gives no versions: a plain PUT (it cannot check one)
        client.update(body)
        return Version(body, None)
    answer = client.put(body, if_match=f'W/"{version}"')
    written = answer if answer.get("resourceType") == resource["resourceType"] else body
    return Version(written, version_of(answer))


def _for_put(resource: dict[str, Any]) -> dict[str, Any]:
    """The body to send: without the version data the EHR assigns."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _SERVER_META}
    body = {k: v for k, v in resource.items() if k != "meta"}
    return ({"meta": meta} if meta else {}) | body


_SERVER_META = ("versionId", "lastUpdated")


def put_change(
    client: FhirClient,
    rtype: str,
    rid: str,
    merge: Merge,
    base: Version | None,
) -> Landed:
    """Our change (`merge`: a version in, that version with our change out) written onto
    `base` (the version it was based on; None: read the newest first)."""
    fresh = base is None
    current = base or read(client, rtype, rid)
    for _ in range(MAX_ROUNDS):
        body = merge(current.resource)
        if fresh and same_content(body, current.resource):
            return Landed(current.resource, current.version, "200 (already so)")
        try:
            written = put(client, body, current.version)
            return Landed(written.resource, written.version, "200")
        except FhirError as exc:
            if exc.status not in (409, 412):
                raise
        newest = read(client, rtype, rid)
        mine = _landed_since(client, rtype, rid, current.version, newest, merge)
        if mine is not None:
            return mine
        current, fresh = newest, True
    raise FhirError(
        f"The {rtype} kept changing at the EHR while Handoff wrote to it; Handoff tries again.",
        status=412,
        transient=True,
    )


def _landed_since(
    client: FhirClient,
    rtype: str,
    rid: str,
    since: str | None,
    newest: Version,
    merge: Merge,
) -> Landed | None:
    """The first version after `since` that already shows our change (ours, whose answer
    was lost; or one that needed nothing from us), oldest first; None when none does. Read
    from the resource's history where the EHR has one, else the newest version alone."""
    versions = _history_since(client, rtype, rid, since) or [newest]
    for version in versions:
        if same_content(merge(version.resource), version.resource):
            return Landed(version.resource, version.version, "200 (found)")
    return None


def _history_since(
    client: FhirClient, rtype: str, rid: str, since: str | None
) -> list[Version] | None:
    """The versions after `since`, oldest first (None: the EHR has no history to read)."""
    try:
        bundle = client.get(f"{rtype}/{rid}/_history?_count={HISTORY_COUNT}")
    except FhirError as exc:
        if exc.transient:
            raise
        return None
    versions: list[tuple[tuple[str, int, int], Version]] = []
    entries = bundle.get("entry") or []
    for index, entry in enumerate(entries):  # newest first, as a rule; not every EHR keeps it
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):  # else a deletion
            versions.append((_age(resource, len(entries) - index), Version(resource, None)))
    ordered = [
        Version(v.resource, version_of(v.resource)) for _, v in sorted(versions, key=lambda p: p[0])
    ]
    seen = [v.version for v in ordered]
    if since is not None and since in seen:
        ordered = ordered[seen.index(since) + 1 :]
    return ordered or None


def _age(resource: dict[str, Any], position: int) -> tuple[str, int, int]:
    """A sort key, oldest first: lastUpdated, then a numeric versionId, then the position in
    the EHR's answer (a history Bundle lists the newest first)."""
    meta = resource.get("meta") or {}
    version = str(meta.get("versionId") or "")
    return (str(meta.get("lastUpdated") or ""), int(version) if version.isdigit() else 0, position)
