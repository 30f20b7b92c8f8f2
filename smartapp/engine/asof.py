"""The chart as it stood at a past time: what a replay of history (``rules backtest``) sees.

Pure functions over FHIR resources (plain dicts, never mutated). The rules are documented
in ``rules/README.md`` ("Replaying history"):

* a resource is **visible** at time T when it had entered the chart by T: its clinical
  time, every recorded time it carries, and the start of the encounter it references are
  all at or before T (a resource with none of these is timeless: always visible);
* a resource whose status carries a date is read **as it stood** at T: before its
  *change time* it has its *earlier form* (a Condition abated after T was active, a
  patient who died after T was alive, an encounter that ended after T was in progress);
* the **current visit** (the replayed ED encounter) is in progress.

:meth:`Chart.as_of` applies these rules to an indexed chart without rebuilding it;
:func:`cut_bundle` applies them from scratch and returns a Bundle of the chart as it
stood. Both must agree (the tests check it on Synthea patients).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .fhir import choice_time, clinical_time, parse_datetime, reference_string, status_code

if TYPE_CHECKING:
    from .chart import Chart

#: Elements that say when a resource was recorded or happened, besides its clinical time
#: (``fhir.CLINICAL_TIME_FIELDS``). A Period counts from its start. Names ending in ``[x]``
#: are choice elements (``DateTime``, ``Instant``, ``Period``).
RECORDED_TIME_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Condition": ("recordedDate",),
    "AllergyIntolerance": ("recordedDate",),
    "Observation": ("issued",),
    "MedicationStatement": ("dateAsserted",),
    "DiagnosticReport": ("effective[x]", "issued"),
    "Procedure": ("performed[x]",),
    "Immunization": ("occurrence[x]", "recorded"),
    "CarePlan": ("period", "created"),
    "CareTeam": ("period",),
    "Goal": ("startDate",),
    "Claim": ("billablePeriod", "created"),
    "ExplanationOfBenefit": ("billablePeriod", "created"),
    "ImagingStudy": ("started",),
    "DocumentReference": ("date",),
    "Provenance": ("recorded",),
}

#: Condition clinical statuses that end a condition; before its abatement it was active.
ENDED_CONDITION = frozenset({"inactive", "resolved", "remission"})
#: MedicationStatement statuses that end one; before its effectivePeriod.end it was active.
ENDED_STATEMENT = frozenset({"completed", "stopped"})
#: Change time of a death that cannot be dated: the patient is alive at every past visit.
UNDATED = datetime.max.replace(tzinfo=UTC)

_ACTIVE_CONDITION = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
    ]
}


def _element_time(resource: dict[str, Any], element: str) -> datetime | None:
    """Time of an element: a dateTime/instant string, a Period's start, or a choice [x]."""
    if element.endswith("[x]"):
        return choice_time(resource, element[:-3])
    value = resource.get(element)
    if isinstance(value, dict):
        return parse_datetime(value.get("start"))
    return parse_datetime(value)


def encounter_appears(encounter: dict[str, Any]) -> datetime | None:
    """When an Encounter entered the chart: its period's start, else its end."""
    period = encounter.get("period")
    if not isinstance(period, dict):
        return None
    return parse_datetime(period.get("start")) or parse_datetime(period.get("end"))


def appears_at(resource: dict[str, Any], encounter_start: datetime | None) -> datetime | None:
    """When a resource entered the chart: the latest of its clinical time, its recorded
    times and ``encounter_start`` (the start of the encounter it references); None when it
    carries no time at all (Patient, Medication, Organization...: always visible)."""
    rtype = resource.get("resourceType")
    if rtype == "Encounter":
        return encounter_appears(resource)
    times = [clinical_time(resource), encounter_start]
    recorded = RECORDED_TIME_ELEMENTS.get(rtype, ()) if isinstance(rtype, str) else ()
    times.extend(_element_time(resource, e) for e in recorded)
    known = [t for t in times if t is not None]
    return max(known) if known else None


def change_time(resource: dict[str, Any]) -> datetime | None:
    """When a resource took its recorded form, if it had an earlier one; else None.

    Condition: its abatement (dateTime or Period start). Patient: its death
    (``UNDATED`` when recorded as deceased without a usable date). Encounter with status
    ``finished``: its period's end. MedicationStatement ``completed`` or ``stopped``: its
    effectivePeriod's end.
    """
    rtype = resource.get("resourceType")
    if rtype == "Condition":
        return choice_time(resource, "abatement")
    if rtype == "Patient":
        if resource.get("deceasedBoolean") is True or resource.get("deceasedDateTime"):
            return parse_datetime(resource.get("deceasedDateTime")) or UNDATED
        return None
    if rtype == "Encounter":
        period = resource.get("period")
        if resource.get("status") == "finished" and isinstance(period, dict):
            return parse_datetime(period.get("end"))
        return None
    if rtype == "MedicationStatement":
        period = resource.get("effectivePeriod")
        if status_code(resource.get("status")) in ENDED_STATEMENT and isinstance(period, dict):
            return parse_datetime(period.get("end"))
    return None


def earlier_form(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as it stood before its change time (a new dict; the input is kept).

    Condition: no abatement, and clinicalStatus ``active`` if it was inactive, resolved or
    in remission. Patient: alive (no deceased element). Encounter: ``in-progress``, no
    period end. MedicationStatement: ``active``, no effectivePeriod end.
    """
    rtype = resource.get("resourceType")
    out = dict(resource)
    if rtype == "Condition":
        for name in [k for k in out if k.startswith("abatement")]:
            del out[name]
        if status_code(out.get("clinicalStatus")) in ENDED_CONDITION:
            out["clinicalStatus"] = _ACTIVE_CONDITION
    elif rtype == "Patient":
        out.pop("deceasedBoolean", None)
        out.pop("deceasedDateTime", None)
    elif rtype == "Encounter":
        return in_progress(resource)
    elif rtype == "MedicationStatement":
        out["status"] = "active"
        out["effectivePeriod"] = {k: v for k, v in out["effectivePeriod"].items() if k != "end"}
    return out


def in_progress(encounter: dict[str, Any]) -> dict[str, Any]:
    """An encounter as the visit in progress: status ``in-progress`` and no period end."""
    out = dict(encounter, status="in-progress")
    period = out.get("period")
    if isinstance(period, dict) and "end" in period:
        out["period"] = {k: v for k, v in period.items() if k != "end"}
    return out


def resource_as_of(resource: dict[str, Any], time: datetime) -> dict[str, Any]:
    """The resource as it stood at ``time`` (visibility is decided by :func:`appears_at`)."""
    when = change_time(resource)
    return earlier_form(resource) if when is not None and time < when else resource


def encounter_key(encounter: str) -> str:
    """``abc`` -> ``Encounter/abc``; references (``Encounter/abc``, ``urn:uuid:...``) kept."""
    bare = "/" not in encounter and not encounter.startswith("urn:")
    return f"Encounter/{encounter}" if bare else encounter


def cut_bundle(
    chart: Chart, time: datetime, current_encounter: str | None = None
) -> dict[str, Any]:
    """From scratch: a collection Bundle of the chart as it stood at ``time``.

    Every visible resource in chart order, read as it stood (the current encounter in
    progress), under each fullUrl it was given (so ``urn:uuid:`` references still resolve).
    ``Chart.from_bundle`` of the result is what :meth:`Chart.as_of` answers for, cheaply.
    """
    current = chart.resolve(encounter_key(current_encounter)) if current_encounter else None
    urls = chart.full_urls()
    entries: list[dict[str, Any]] = []
    for entry in chart.of_all():
        resource = entry.resource
        start = None
        element = "encounter" if "encounter" in resource else "context"
        ref = reference_string(resource.get(element))
        if ref is not None and resource.get("resourceType") != "Encounter":
            target = chart.resolve(ref)
            if target is not None and target.startswith("Encounter/"):
                start = encounter_appears(chart.get(target) or {})
        appears = appears_at(resource, start)
        if appears is not None and appears > time:
            continue
        then = in_progress(resource) if entry.key == current else resource_as_of(resource, time)
        for url in urls.get(entry.key) or (None,):
            entries.append({"fullUrl": url, "resource": then} if url else {"resource": then})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
