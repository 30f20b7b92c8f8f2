"""A patient's chart: FHIR R4 resources indexed once for the rule engine.

The chart is read-only after construction. Every resource gets a canonical key
(``Type/id``), its references are resolved (``Type/id``, absolute URLs ending in
``Type/id``, ``urn:uuid:`` fullUrls, ``#contained``), and it is indexed by type and by
the (system, code) of its code, so rules query indexes instead of scanning the chart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .fhir import clinical_time, codings, parse_datetime, reference_string, type_id_of

#: Bundle types a chart can come from. batch/transaction responses carry nested searchsets.
BUNDLE_TYPES = frozenset(
    {"collection", "searchset", "transaction", "batch-response", "transaction-response"}
)
MEDICATION_TYPES = frozenset(
    {"MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"}
)
#: Marks a resource that names an encounter the chart cannot identify (never "this visit").
UNMATCHED_ENCOUNTER = "(unmatched encounter)"


class ChartError(ValueError):
    """The chart input is malformed; the message names what is wrong and where."""


@dataclass(frozen=True, slots=True)
class ChartEntry:
    """One resource with what the engine reads from it, computed once at load."""

    key: str
    resource: dict[str, Any]
    codes: tuple[tuple[str, str], ...]
    time: datetime | None
    encounter: str | None  # key of the encounter it references; None if it names none

    @property
    def resource_type(self) -> str:
        """The resource's FHIR type."""
        return self.resource["resourceType"]


class Chart:
    """One patient's resources, indexed by key, type and coding."""

    def __init__(self, entries: Mapping[str, ChartEntry], aliases: Mapping[str, str]) -> None:
        """Build the indexes; use :meth:`from_bundle` or :meth:`from_resources` instead."""
        self._entries = dict(entries)
        self._resolver = _Resolver(self._entries, dict(aliases))
        by_type: dict[str, list[ChartEntry]] = defaultdict(list)
        by_code: dict[tuple[str, str], list[ChartEntry]] = defaultdict(list)
        for entry in self._entries.values():
            by_type[entry.resource_type].append(entry)
            for coding in set(entry.codes):
                by_code[coding].append(entry)
        self._by_type = {t: tuple(v) for t, v in by_type.items()}
        self._by_code = {c: tuple(v) for c, v in by_code.items()}
        systems: dict[str, set[str]] = defaultdict(set)
        for system, code in self._by_code:
            systems[system].add(code)
        self._codes_by_system = {s: frozenset(c) for s, c in systems.items()}
        patients = self._by_type.get("Patient", ())
        self._patient = patients[0].resource if patients else None

    # construction -------------------------------------------------------------------

    @classmethod
    def from_bundle(cls, bundle: Any) -> Chart:
        """Chart from a collection, searchset, transaction or batch-response Bundle."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            found = bundle.get("resourceType") if isinstance(bundle, dict) else None
            found = found or type(bundle).__name__
            raise ChartError(f"chart: expected a FHIR Bundle, got {found!r}")
        return cls._build(_bundle_resources(bundle, "Bundle"))

    @classmethod
    def from_resources(cls, resources: Iterable[Any]) -> Chart:
        """Chart from FHIR resources (a Bundle among them is read entry by entry)."""
        if isinstance(resources, dict | str | bytes):
            raise ChartError("chart: expected a list of FHIR resources")
        items: list[tuple[str | None, dict[str, Any], str]] = []
        for i, resource in enumerate(resources):
            where = f"resources[{i}]"
            _check_resource(resource, where)
            if resource["resourceType"] == "Bundle":
                items.extend(_bundle_resources(resource, where))
            else:
                items.append((None, resource, where))
        return cls._build(items)

    @classmethod
    def _build(cls, items: Iterable[tuple[str | None, dict[str, Any], str]]) -> Chart:
        """Key every resource, resolve references, then index."""
        keyed: dict[str, tuple[dict[str, Any], str]] = {}
        aliases: dict[str, str] = {}
        for full_url, resource, where in items:
            if resource["resourceType"] == "OperationOutcome":
                _check_outcome(resource, where)
                continue
            key = _key_of(resource, full_url, where)
            if key in keyed and keyed[key][0] != resource:
                raise ChartError(f"{where}: {key} appears twice with different content")
            keyed.setdefault(key, (resource, where))
            if full_url:
                aliases[full_url] = key
        resolver = _Resolver(keyed, aliases)
        entries = {
            key: ChartEntry(
                key=key,
                resource=resource,
                codes=_codes(resource, key, resolver),
                time=_time(resource),
                encounter=_encounter_of(resource, resolver),
            )
            for key, (resource, _where) in keyed.items()
        }
        _check_one_patient(entries.values(), resolver)
        return cls(entries, aliases)

    # queries ------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of resources in the chart."""
        return len(self._entries)

    def resolve(self, reference: str) -> str | None:
        """Key of the chart resource a reference points to, or None."""
        return self._resolver.resolve(reference)

    def get(self, reference: str) -> dict[str, Any] | None:
        """The resource a reference (``Condition/1``, ``urn:uuid:...``, URL) points to."""
        key = self.resolve(reference)
        return self._entries[key].resource if key else None

    def entry(self, key: str) -> ChartEntry | None:
        """The indexed entry for a canonical key."""
        return self._entries.get(key)

    def of_type(self, resource_type: str) -> tuple[ChartEntry, ...]:
        """All entries of one resource type, in chart order."""
        return self._by_type.get(resource_type, ())

    def with_code(self, system: str, code: str) -> tuple[ChartEntry, ...]:
        """Entries whose code (or medication's code) has this exact coding."""
        return self._by_code.get((system, code), ())

    def codes_in_system(self, system: str) -> frozenset[str]:
        """Distinct codes of one code system used anywhere in the chart's codes."""
        return self._codes_by_system.get(system, frozenset())

    @property
    def patient(self) -> dict[str, Any] | None:
        """The Patient resource, if the chart has one."""
        return self._patient

    @property
    def encounters(self) -> list[dict[str, Any]]:
        """All Encounter resources."""
        return [e.resource for e in self.of_type("Encounter")]


# ---------------------------------------------------------------------------------------
# reading bundles


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


def _bundle_resources(
    bundle: dict[str, Any], where: str
) -> Iterator[tuple[str | None, dict[str, Any], str]]:
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
        _check_response(entry, here)
        if "resource" not in entry:
            raise ChartError(f"{here}: entry has no resource")
        resource = entry["resource"]
        _check_resource(resource, f"{here}.resource")
        if resource["resourceType"] == "Bundle":
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


def _check_outcome(outcome: dict[str, Any], where: str) -> None:
    """An OperationOutcome with an error or fatal issue means a failed search."""
    for issue in outcome.get("issue") or ():
        if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
            text = issue.get("diagnostics") or issue.get("code") or "error"
            raise ChartError(f"{where}: OperationOutcome reports an error: {text}")


def _key_of(resource: dict[str, Any], full_url: str | None, where: str) -> str:
    """``Type/id`` of a resource, from its id or, lacking one, from its fullUrl."""
    rtype = resource["resourceType"]
    if resource.get("id"):
        return f"{rtype}/{resource['id']}"
    if full_url and full_url.startswith("urn:uuid:"):
        return f"{rtype}/{full_url[len('urn:uuid:'):]}"
    tail = type_id_of(full_url) if full_url else None
    if tail and tail.startswith(rtype + "/"):
        return tail
    raise ChartError(f"{where}: {rtype} has no id and no usable fullUrl")


# ---------------------------------------------------------------------------------------
# references and derived fields


class _Resolver:
    """Resolves reference strings to canonical keys of the chart."""

    def __init__(self, keys: Mapping[str, Any], aliases: Mapping[str, str]) -> None:
        self._keys = keys
        self._aliases = aliases

    def resolve(self, reference: str) -> str | None:
        """Key of a chart resource, or None if the chart does not hold it."""
        if reference in self._aliases:
            return self._aliases[reference]
        if reference in self._keys:
            return reference
        tail = type_id_of(reference)
        return tail if tail in self._keys else None

    def canonical(self, reference: str) -> str | None:
        """Key of the resource named, even when the chart does not hold it."""
        return self.resolve(reference) or type_id_of(reference)

    def lookup(self, key: str) -> dict[str, Any]:
        """The resource for a resolved key."""
        value = self._keys[key]
        return value[0] if isinstance(value, tuple) else value.resource


def _codes(resource: dict[str, Any], key: str, resolver: _Resolver) -> tuple[tuple[str, str], ...]:
    """(system, code) pairs of the resource's code, or of its medication's code."""
    if resource["resourceType"] in MEDICATION_TYPES:
        if "medicationCodeableConcept" in resource:
            return tuple(codings(resource["medicationCodeableConcept"]))
        medication = _medication_of(resource, key, resolver)
        return tuple(codings(medication.get("code")))
    return tuple(codings(resource.get("code")))


def _medication_of(resource: dict[str, Any], key: str, resolver: _Resolver) -> dict[str, Any]:
    """The Medication a medicationReference points to (contained or in the chart).

    An unresolvable medication would hide what the patient takes (say, methadone), so it
    is an error rather than a silently uncoded order.
    """
    ref = reference_string(resource.get("medicationReference"))
    if ref is None:
        raise ChartError(f"{key}: has neither medicationCodeableConcept nor medicationReference")
    if ref.startswith("#"):
        for contained in resource.get("contained") or ():
            if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                return contained
    else:
        target = resolver.resolve(ref)
        if target is not None and target.startswith("Medication/"):
            return resolver.lookup(target)
    raise ChartError(f"{key}: medicationReference {ref!r} is not in the chart")


def _time(resource: dict[str, Any]) -> datetime | None:
    """Clinical time of a resource; an Encounter's is its period start."""
    if resource["resourceType"] == "Encounter":
        period = resource.get("period")
        return parse_datetime(period.get("start")) if isinstance(period, dict) else None
    return clinical_time(resource)


def _encounter_of(resource: dict[str, Any], resolver: _Resolver) -> str | None:
    """Key of the Encounter a resource references (``encounter``, else ``context``).

    None when it references no encounter; UNMATCHED_ENCOUNTER when it references one the
    chart cannot name (so it never counts as "this visit" by time either).
    """
    if resource["resourceType"] == "Encounter":
        return None
    if "encounter" in resource:
        ref = reference_string(resource["encounter"])
        return (resolver.canonical(ref) if ref else None) or UNMATCHED_ENCOUNTER
    context = resource.get("context")
    if not isinstance(context, dict):
        return None
    ref = reference_string(context)
    target = resolver.canonical(ref) if ref else None
    if target is not None:
        return target if target.startswith("Encounter/") else None
    return UNMATCHED_ENCOUNTER if context.get("type", "Encounter") == "Encounter" else None


def _check_one_patient(entries: Iterable[ChartEntry], resolver: _Resolver) -> None:
    """A chart is one patient's: resources about another patient are an error."""
    patients: set[str] = set()
    for entry in entries:
        if entry.resource_type == "Patient":
            patients.add(entry.key)
            continue
        for field in ("subject", "patient"):
            ref = reference_string(entry.resource.get(field))
            target = resolver.canonical(ref) if ref else None
            if target and target.startswith("Patient/"):
                patients.add(target)
    if len(patients) > 1:
        names = ", ".join(sorted(patients)[:4])
        raise ChartError(f"chart: resources of more than one patient ({names})")
