"""A patient's chart: FHIR R4 resources indexed once for the rule engine.

The chart is read-only after construction. Every resource gets a canonical key
(``Type/id``), its references are resolved (``Type/id``, absolute URLs ending in
``Type/id``, ``urn:uuid:`` fullUrls, ``#contained``), and it is indexed by type and by
the (system, code) of its code, so rules query indexes instead of scanning the chart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from . import asof
from .fhir import (
    CLINICAL_TIME_FIELDS,
    clinical_time,
    coding_tuple,
    parse_datetime,
    reference_string,
    type_id_of,
)

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

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind  # a short name for what is wrong, where the caller may need it


#: Reports a resource left out of a lenient chart: (its key, what is wrong, in words).
Unreadable = Callable[[str, str], None]


class MultiplePatientsError(ChartError):
    """The resources are about more than one patient (so they are not one chart)."""


#: A resource as read from the input: (bundle fullUrl or None, resource, where it was).
ChartItem = tuple[str | None, dict[str, Any], str]


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

    def __init__(
        self,
        entries: Mapping[str, ChartEntry],
        aliases: Mapping[str, str],
        resolver: _Resolver | None = None,
    ) -> None:
        """Build the indexes; use :meth:`from_bundle` or :meth:`from_resources` instead."""
        self._entries = dict(entries)
        self._aliases = dict(aliases)
        self._resolver = resolver or _Resolver(self._entries, self._aliases)
        by_type: dict[str, list[ChartEntry]] = {}
        by_code: dict[tuple[str, str], list[ChartEntry]] = {}
        for entry in self._entries.values():
            rtype = entry.resource["resourceType"]
            found = by_type.get(rtype)
            if found is None:
                by_type[rtype] = [entry]
            else:
                found.append(entry)
            codes = entry.codes
            for coding in codes if len(codes) < 2 else dict.fromkeys(codes):
                found = by_code.get(coding)
                if found is None:
                    by_code[coding] = [entry]
                else:
                    found.append(entry)
        self._by_type = {t: tuple(v) for t, v in by_type.items()}
        self._by_code = {c: tuple(v) for c, v in by_code.items()}
        systems: dict[str, set[str]] = defaultdict(set)
        for system, code in self._by_code:
            systems[system].add(code)
        self._codes_by_system = {s: frozenset(c) for s, c in systems.items()}
        patients = self._by_type.get("Patient", ())
        self._patient = patients[0].resource if patients else None
        # value set membership, once per value set object (see members())
        self._members: dict[int, tuple[Any, tuple[ChartEntry, ...]]] = {}
        self._history: _History | None = None
        self._with: dict[tuple[str, str], tuple[ChartEntry, ...]] = {}

    # construction -------------------------------------------------------------------

    @classmethod
    def from_bundle(cls, bundle: Any) -> Chart:
        """Chart from a collection, searchset, transaction or batch-response Bundle."""
        return cls._build(bundle_items(bundle))

    @classmethod
    def from_resources(cls, resources: Iterable[Any]) -> Chart:
        """Chart from FHIR resources (a Bundle among them is read entry by entry)."""
        return cls._build(resource_items(resources))

    @classmethod
    def from_items(
        cls, items: Iterable[ChartItem], on_unreadable: Unreadable | None = None
    ) -> Chart:
        """Chart from items of :func:`bundle_items` / :func:`resource_items` (or a part).

        With ``on_unreadable``, a resource the chart cannot take (two different versions of
        one key, an order whose medication is not in the chart) is left out and reported as
        ``on_unreadable(key, problem)`` instead of raising ChartError (see readable.py).
        """
        return cls._build(items, on_unreadable)

    @classmethod
    def _build(cls, items: Iterable[ChartItem], on_unreadable: Unreadable | None = None) -> Chart:
        """Key every resource, resolve references, then index (one pass over the chart)."""
        keyed: dict[str, tuple[dict[str, Any], str]] = {}
        aliases: dict[str, str] = {}
        conflicting: set[str] = set()
        for full_url, resource, where in items:
            rtype = resource["resourceType"]
            if rtype == "OperationOutcome":
                _check_outcome(resource, where)
                continue
            rid = resource.get("id")
            key = f"{rtype}/{rid}" if rid else _key_of(resource, full_url, where)
            prior = keyed.get(key)
            if prior is None:
                keyed[key] = (resource, where)
            elif prior[0] is not resource and prior[0] != resource:
                if on_unreadable is None:
                    raise ChartError(f"{where}: {key} appears twice with different content")
                conflicting.add(key)  # which version is right is unknown: neither is read
            if full_url:
                aliases[full_url] = key
        for key in sorted(conflicting):
            del keyed[key]
            on_unreadable(key, "it appears twice with different content")
        resolver = _Resolver(keyed, aliases)
        target = resolver.target
        timed = CLINICAL_TIME_FIELDS
        entries: dict[str, ChartEntry] = {}
        patients: set[str] = set()
        left_out: list[str] = []
        # one tight loop: this is most of the cost of evaluating a chart
        for key, (resource, _where) in keyed.items():
            rtype = resource["resourceType"]
            if rtype in MEDICATION_TYPES:
                try:
                    codes = _codes(resource, rtype, key, resolver)
                except ChartError as error:
                    if on_unreadable is None:
                        raise
                    on_unreadable(key, _MEDICATION_PROBLEM.get(error.kind, str(error)))
                    left_out.append(key)
                    continue
            else:
                concept = resource.get("code")
                codes = coding_tuple(concept) if concept else ()
            if rtype == "Encounter":
                period = resource.get("period")
                time = parse_datetime(period.get("start")) if isinstance(period, dict) else None
                encounter = None
            else:
                time = clinical_time(resource) if rtype in timed else None
                encounter = _encounter_of(resource, target)
            entries[key] = ChartEntry(key, resource, codes, time, encounter)
            if rtype == "Patient":
                patients.add(key)
                continue
            for element in ("subject", "patient"):
                value = resource.get(element)
                if value is not None:
                    owner = target(value)
                    if owner is not None and owner.startswith("Patient/"):
                        patients.add(owner)
        for key in left_out:
            del keyed[key]  # references to it now resolve to nothing, as to any absent one
        if len(patients) > 1:
            names = ", ".join(sorted(patients)[:4])
            raise MultiplePatientsError(f"chart: resources of more than one patient ({names})")
        return cls(entries, aliases, resolver)

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

    def with_element(self, resource_type: str, element: str) -> tuple[ChartEntry, ...]:
        """Entries of one type whose resource has this (non-empty) element, in chart order
        (memoised: encounters with a ``reasonCode`` are asked for at every evaluation)."""
        key = (resource_type, element)
        found = self._with.get(key)
        if found is None:
            found = self._with[key] = tuple(
                e for e in self.of_type(resource_type) if e.resource.get(element)
            )
        return found

    @property
    def patient(self) -> dict[str, Any] | None:
        """The Patient resource, if the chart has one."""
        return self._patient

    @property
    def encounters(self) -> list[dict[str, Any]]:
        """All Encounter resources."""
        return [e.resource for e in self.of_type("Encounter")]

    def of_all(self) -> tuple[ChartEntry, ...]:
        """Every entry, in chart order."""
        return tuple(self._entries.values())

    def members(self, valueset: ValueSetLike) -> tuple[ChartEntry, ...]:
        """Entries with at least one coding in a value set (computed once per value set).

        ``valueset`` is anything with ``systems`` and ``contains(system, code)``.
        """
        cached = self._members.get(id(valueset))
        if cached is not None and cached[0] is valueset:
            return cached[1]
        hits: dict[str, ChartEntry] = {}
        for system in valueset.systems:
            for code in self.codes_in_system(system):
                if valueset.contains(system, code):
                    hits.update((e.key, e) for e in self.with_code(system, code))
        found = tuple(hits.values())
        # kept with its result, so the value set's id() cannot be reused meanwhile
        self._members[id(valueset)] = (valueset, found)
        return found

    # history --------------------------------------------------------------------------

    def as_of(self, time: datetime, current_encounter: str | None = None) -> Chart:
        """The chart as it stood at ``time`` ("Replaying history" in rules/README.md).

        Resources that entered the chart after ``time`` are hidden; statuses that carry a
        date read as they stood (a Condition abated later was active, a patient who died
        later was alive); ``current_encounter`` (``abc``, ``Encounter/abc`` or a fullUrl)
        is the visit in progress. A cheap view: this chart's indexes are shared, never
        rebuilt, and queries give what ``Chart.from_bundle(asof.cut_bundle(self, time,
        current_encounter))`` would, built from scratch.
        """
        if time.tzinfo is None or time.utcoffset() is None:
            raise ValueError("time must be timezone-aware")
        if self._history is None:
            self._history = _History(self)
        return _ChartAsOf(self, self._history, time, current_encounter)

    def appears_at(self, key: str) -> datetime | None:
        """When a resource entered the chart (None: it carries no time, always there)."""
        if self._history is None:
            self._history = _History(self)
        return self._history.appears(self._entries[key])

    def full_urls(self) -> dict[str, list[str]]:
        """The fullUrls each key was given in its bundle(s)."""
        out: dict[str, list[str]] = defaultdict(list)
        for url, key in self._aliases.items():
            out[key].append(url)
        return dict(out)


class ValueSetLike(Protocol):
    """What :meth:`Chart.members` needs of a value set."""

    @property
    def systems(self) -> frozenset[str]: ...

    def contains(self, system: str, code: str) -> bool: ...


class _History:
    """What as-of views of one chart need, computed lazily and shared by all views."""

    def __init__(self, chart: Chart) -> None:
        self._entries = chart._entries
        self._appears: dict[str, datetime | None] = {}
        self._changes: dict[str, tuple[datetime | None, ChartEntry | None]] = {}

    def appears(self, entry: ChartEntry) -> datetime | None:
        """When the entry's resource entered the chart (see asof.appears_at)."""
        key = entry.key
        try:
            return self._appears[key]
        except KeyError:
            pass
        start = None
        if entry.encounter is not None:
            target = self._entries.get(entry.encounter)
            if target is not None and target.resource["resourceType"] == "Encounter":
                start = asof.encounter_appears(target.resource)
        found = self._appears[key] = asof.appears_at(entry.resource, start)
        return found

    def then(self, entry: ChartEntry, time: datetime) -> ChartEntry:
        """The entry as it stood at ``time``: its earlier form before its change time."""
        change = self._changes.get(entry.key)
        if change is None:
            when = asof.change_time(entry.resource)
            earlier = None if when is None else _revised(entry, asof.earlier_form(entry.resource))
            change = self._changes[entry.key] = (when, earlier)
        when, earlier = change
        return earlier if earlier is not None and when is not None and time < when else entry


def _revised(entry: ChartEntry, resource: dict[str, Any]) -> ChartEntry:
    """The entry with another version of its resource (same code, time and encounter)."""
    return ChartEntry(entry.key, resource, entry.codes, entry.time, entry.encounter)


class _ChartAsOf(Chart):
    """A chart as it stood at a time: a filtering view of a full chart (see Chart.as_of)."""

    def __init__(self, base: Chart, history: _History, time: datetime, current: str | None) -> None:
        # Chart.__init__ is not called: queries are answered from the base's indexes.
        self._base = base
        self._hist = history
        self._time = time
        self._current: ChartEntry | None = None
        key = base.resolve(asof.encounter_key(current)) if current else None
        if key is not None and key.startswith("Encounter/"):
            entry = base._entries[key]
            self._current = _revised(entry, asof.in_progress(entry.resource))
        self._members = {}
        self._history = history

    def _visible(self, entry: ChartEntry) -> bool:
        appears = self._hist.appears(entry)
        return appears is None or appears <= self._time

    def _then(self, entry: ChartEntry) -> ChartEntry:
        current = self._current
        if current is not None and entry.key == current.key:
            return current
        return self._hist.then(entry, self._time)

    def _cut(self, entries: Iterable[ChartEntry]) -> tuple[ChartEntry, ...]:
        return tuple(self._then(e) for e in entries if self._visible(e))

    def __len__(self) -> int:
        return sum(1 for e in self._base._entries.values() if self._visible(e))

    def resolve(self, reference: str) -> str | None:
        key = self._base.resolve(reference)
        return key if key is not None and self._visible(self._base._entries[key]) else None

    def get(self, reference: str) -> dict[str, Any] | None:
        key = self.resolve(reference)
        return self._then(self._base._entries[key]).resource if key else None

    def entry(self, key: str) -> ChartEntry | None:
        found = self._base._entries.get(key)
        return self._then(found) if found is not None and self._visible(found) else None

    def of_all(self) -> tuple[ChartEntry, ...]:
        return self._cut(self._base._entries.values())

    def of_type(self, resource_type: str) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.of_type(resource_type))

    def with_code(self, system: str, code: str) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.with_code(system, code))

    def with_element(self, resource_type: str, element: str) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.with_element(resource_type, element))

    def codes_in_system(self, system: str) -> frozenset[str]:
        return frozenset(
            code
            for code in self._base.codes_in_system(system)
            if any(self._visible(e) for e in self._base.with_code(system, code))
        )

    @property
    def patient(self) -> dict[str, Any] | None:
        patients = self.of_type("Patient")
        return patients[0].resource if patients else None

    def members(self, valueset: ValueSetLike) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.members(valueset))

    def as_of(self, time: datetime, current_encounter: str | None = None) -> Chart:
        raise TypeError("a chart as of a time is a view: call as_of on the full chart")

    def appears_at(self, key: str) -> datetime | None:
        return self._base.appears_at(key)

    def full_urls(self) -> dict[str, list[str]]:
        keys = {e.key for e in self.of_all()}
        return {k: v for k, v in self._base.full_urls().items() if k in keys}


# ---------------------------------------------------------------------------------------
# reading bundles


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
    return _key_of(resource, full_url, where)


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
    issues = outcome.get("issue")
    for issue in issues if isinstance(issues, list) else ():
        if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
            text = str(issue.get("diagnostics") or issue.get("code") or "error")
            if len(text) > 200:  # the EHR's words, shown on an error page: bounded
                text = text[:200] + "…"
            raise ChartError(f"{where}: OperationOutcome reports an error: {text}")


def _key_of(resource: dict[str, Any], full_url: str | None, where: str) -> str:
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


# ---------------------------------------------------------------------------------------
# references and derived fields


class _Resolver:
    """Resolves reference strings to canonical keys of the chart (memoised)."""

    def __init__(self, keys: Mapping[str, Any], aliases: Mapping[str, str]) -> None:
        self._keys = keys
        self._aliases = aliases
        self._canonical: dict[str, str | None] = {}
        self._targets: dict[str, str | None] = {}

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
        try:
            return self._canonical[reference]
        except KeyError:
            found = self._canonical[reference] = self.resolve(reference) or type_id_of(reference)
            return found

    def target(self, value: Any) -> str | None:
        """Canonical key a Reference element names; None when it has no reference."""
        if not isinstance(value, dict):
            return None
        raw = value.get("reference")
        if not isinstance(raw, str):
            return None
        try:
            return self._targets[raw]
        except KeyError:
            ref = raw.strip()
            found = self._targets[raw] = self.canonical(ref) if ref else None
            return found

    def lookup(self, key: str) -> dict[str, Any]:
        """The resource for a resolved key."""
        value = self._keys[key]
        return value[0] if isinstance(value, tuple) else value.resource


def _codes(
    resource: dict[str, Any], rtype: str, key: str, resolver: _Resolver
) -> tuple[tuple[str, str], ...]:
    """(system, code) pairs of the resource's code, or of its medication's code."""
    if rtype in MEDICATION_TYPES:
        if "medicationCodeableConcept" in resource:
            return coding_tuple(resource["medicationCodeableConcept"])
        medication = _medication_of(resource, key, resolver)
        return coding_tuple(medication.get("code"))
    return coding_tuple(resource.get("code"))


def _medication_of(resource: dict[str, Any], key: str, resolver: _Resolver) -> dict[str, Any]:
    """The Medication a medicationReference points to (contained or in the chart).

    An unresolvable medication would hide what the patient takes (say, methadone), so it
    is an error rather than a silently uncoded order.
    """
    ref = reference_string(resource.get("medicationReference"))
    if ref is None:
        raise ChartError(
            f"{key}: has neither medicationCodeableConcept nor medicationReference", "no-medication"
        )
    if ref.startswith("#"):
        for contained in resource.get("contained") or ():
            if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                return contained
    else:
        target = resolver.resolve(ref)
        if target is not None and target.startswith("Medication/"):
            return resolver.lookup(target)
    raise ChartError(
        f"{key}: medicationReference {ref!r} is not in the chart", "medication-missing"
    )


_MEDICATION_PROBLEM = {
    "no-medication": "it names no medication",
    "medication-missing": "the Medication it references is not in the chart",
}


def _encounter_of(resource: dict[str, Any], target: Callable[[Any], str | None]) -> str | None:
    """Key of the Encounter a resource references (``encounter``, else ``context``).

    None when it references no encounter; UNMATCHED_ENCOUNTER when it references one the
    chart cannot name (so it never counts as "this visit" by time either). ``target`` is
    the chart's :meth:`_Resolver.target`.
    """
    if "encounter" in resource:
        return target(resource["encounter"]) or UNMATCHED_ENCOUNTER
    context = resource.get("context")
    if not isinstance(context, dict):
        return None
    found = target(context)
    if found is not None:
        return found if found.startswith("Encounter/") else None
    return UNMATCHED_ENCOUNTER if context.get("type", "Encounter") == "Encounter" else None
