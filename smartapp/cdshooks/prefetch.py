"""The chart of a CDS Hooks call: what the CDS client prefetched, and what it did not fetched
from its `fhirServer` with the call's `fhirAuthorization` (the same chart read as the launch,
for those types only). A type that could be neither prefetched nor fetched is named unread, and
the engine is told (chart completeness, rules version 2): never silently left out.

The prefetch templates cover every type the engine reads (smartapp.fhir.chart.CHART_TYPES, the
Patient and its Observations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from smartapp.fhir.chart import CHART_TYPES, ChartLimits, ChartRead, withheld_reasons
from smartapp.fhir.client import FhirClient, FhirError

PATIENT = "{{context.patientId}}"

#: prefetch key -> (resource type, template). Searches by patient only (CDS Hooks' prefetch
#: query restrictions); the launch's date window on Observations cannot be a prefetch token.
TEMPLATES: dict[str, tuple[str, str]] = {
    "patient": ("Patient", f"Patient/{PATIENT}"),
    "encounters": ("Encounter", f"Encounter?patient={PATIENT}"),
    "conditions": ("Condition", f"Condition?patient={PATIENT}"),
    "observations": ("Observation", f"Observation?patient={PATIENT}"),
    "medicationRequests": ("MedicationRequest", f"MedicationRequest?patient={PATIENT}"),
    "medicationStatements": ("MedicationStatement", f"MedicationStatement?patient={PATIENT}"),
    "medicationAdministrations": (
        "MedicationAdministration",
        f"MedicationAdministration?patient={PATIENT}",
    ),
    "medicationDispenses": ("MedicationDispense", f"MedicationDispense?patient={PATIENT}"),
    "allergies": ("AllergyIntolerance", f"AllergyIntolerance?patient={PATIENT}"),
    "serviceRequests": ("ServiceRequest", f"ServiceRequest?patient={PATIENT}"),
}
assert {t for t, _ in TEMPLATES.values()} == {"Patient", "Observation", *CHART_TYPES}


class Malformed(ValueError):
    """The request's prefetch is not what CDS Hooks says it is (a 400 with this reason)."""


def templates() -> dict[str, str]:
    """The discovery document's prefetch member."""
    return {key: template for key, (_type, template) in TEMPLATES.items()}


@dataclass
class Prefetched:
    """What the prefetch gave: resources, the types it did not cover (to fetch), and the types
    it covered only in part (withheld records, a next page), with notices in words."""

    resources: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    incomplete: set[str] = field(default_factory=set)
    notices: list[str] = field(default_factory=list)


def read_prefetch(prefetch: dict[str, Any] | None, patient_id: str) -> Prefetched:
    """Sort the prefetch by key: absent keys are missing (the client chose not to, or could
    not: CDS Hooks), null means the client had nothing, a Bundle's entries are taken."""
    found = Prefetched()
    given = prefetch or {}
    for key, (rtype, _template) in TEMPLATES.items():
        if key not in given:
            found.missing.append(rtype)
            continue
        value = given[key]
        if value is None:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise Malformed(f"prefetch.{key}: expected a FHIR resource or Bundle, or null")
        if value["resourceType"] == "Bundle":
            _take_bundle(found, key, rtype, value)
        elif value["resourceType"] == rtype == "Patient":
            if value.get("id") not in (None, patient_id):
                raise Malformed(f"prefetch.{key}: a Patient other than context.patientId")
            found.resources.append(value)
        elif value["resourceType"] == "OperationOutcome":
            found.missing.append(rtype)
        else:
            raise Malformed(f"prefetch.{key}: expected {rtype}, got {value['resourceType']}")
    return found


def _take_bundle(found: Prefetched, key: str, rtype: str, bundle: dict) -> None:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise Malformed(f"prefetch.{key}: Bundle.entry must be a list")
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise Malformed(f"prefetch.{key}.entry[{i}]: no resource")
        if resource["resourceType"] == "OperationOutcome":
            reasons = withheld_reasons(resource)
            if reasons:
                found.incomplete.add(rtype)
                found.notices.append(
                    f"The EHR left {rtype} records out of its prefetch ({'; '.join(reasons)}). "
                    "Suggestions may be incomplete."
                )
            continue
        found.resources.append(resource)
    if any(
        isinstance(link, dict) and link.get("relation") == "next" for link in bundle.get("link", [])
    ):
        # CDS Hooks forbids a next page in a prefetch: what it left is fetched, or unread.
        found.missing.append(rtype)


@dataclass(frozen=True)
class Access:
    """The call's FHIR access: the server and its bearer token (None: none given)."""

    server: str
    token: str


def chart_of(
    prefetched: Prefetched,
    access: Access | None,
    patient_id: str,
    encounter_id: str | None,
    now: datetime,
    observation_days: int,
    limits: ChartLimits,
    timeout: tuple[float, float],
) -> ChartRead:
    """The chart: the prefetch, plus the missing types read from the FHIR server (same searches
    as the launch) and the Medications its orders reference; what could not be read is in
    `incomplete` with a notice, never dropped."""
    read = ChartRead(
        resources=list(prefetched.resources),
        notices=list(prefetched.notices),
        incomplete=set(prefetched.incomplete),
    )
    missing = tuple(dict.fromkeys(prefetched.missing))
    if missing:
        _fetch_missing(
            read, missing, access, patient_id, encounter_id, now, observation_days, limits, timeout
        )
    _read_medications(read, access, timeout)
    return read


def _fetch_missing(
    read: ChartRead,
    missing: tuple[str, ...],
    access: Access | None,
    patient_id: str,
    encounter_id: str | None,
    now: datetime,
    observation_days: int,
    limits: ChartLimits,
    timeout: tuple[float, float],
) -> None:
    """Read the types the prefetch did not cover (the launch's searches), or name them."""
    if access is None:
        read.incomplete.update(missing)
        read.notices.append(
            "The EHR neither prefetched nor let Handoff read: " + ", ".join(missing) + "."
        )
        return
    client = FhirClient(access.server.rstrip("/"), access.token, timeout)
    try:
        fetched = client.read_chart(
            patient_id, encounter_id, now, observation_days, types=missing, limits=limits
        )
    except FhirError as exc:  # the EHR could not be reached at all: all of it unread
        read.incomplete.update(missing)
        read.notices.append(f"{exc} Not read: {', '.join(missing)}.")
        return
    kept = {(r.get("resourceType"), r.get("id")) for r in read.resources}
    read.resources += [
        r for r in fetched.resources if (r.get("resourceType"), r.get("id")) not in kept
    ]
    read.notices += fetched.notices
    read.incomplete |= fetched.incomplete


#: Referenced Medications read for one call, at most (Epic references them from its orders).
MAX_MEDICATIONS = 20


def _read_medications(read: ChartRead, access: Access | None, timeout: tuple[float, float]) -> None:
    """Medications that the chart's medication records reference but do not contain, read
    from the FHIR server as the launch reads them; a record whose Medication could be neither
    prefetched nor read makes its type unread (its code is unknown: it may be methadone)."""
    have = {f"{r.get('resourceType')}/{r.get('id')}" for r in read.resources}
    referencing: dict[str, set[str]] = {}
    for resource in read.resources:
        reference = resource.get("medicationReference")
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(ref, str) and ref and not ref.startswith("#"):
            relative = "/".join(ref.split("/_history/")[0].rstrip("/").split("/")[-2:])
            if relative not in have:
                referencing.setdefault(relative, set()).add(str(resource["resourceType"]))
    unresolved = sorted(referencing)
    if access is not None and unresolved:
        client = FhirClient(access.server.rstrip("/"), access.token, timeout)
        still = []
        for ref in unresolved[:MAX_MEDICATIONS]:
            try:
                found = client.get(ref)
            except FhirError:
                found = None
            if isinstance(found, dict) and found.get("resourceType") == "Medication":
                read.resources.append(found)
            else:
                still.append(ref)
        unresolved = still + unresolved[MAX_MEDICATIONS:]
    if unresolved:
        types = sorted({t for ref in unresolved for t in referencing[ref]})
        read.incomplete.update(types)
        read.notices.append(
            f"{len(unresolved)} medication(s) referenced by {', '.join(types)} could not be "
            "read: their codes are unknown. Suggestions may be incomplete."
        )
