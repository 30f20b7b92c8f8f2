"""A patient's chart: FHIR R4 resources indexed once for the rule engine.

The chart is read-only after construction. Every resource gets a canonical key
(``Type/id``), its references are resolved (``Type/id``, absolute URLs ending in
``Type/id``, ``urn:uuid:`` fullUrls, ``#contained``), and it is indexed by type and by
the (system, code) of its code, so rules query indexes instead of scanning the chart.

The chart's types live in ``chart_types``, input checks in ``chart_input``, references in
``chart_refs`` and the as-of view in ``chart_asof``; their public names are re-exported here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .chart_input import bundle_items, check_outcome, key_of, resource_items, resource_key
from .chart_refs import MEDICATION_PROBLEM, Resolver, codes_of, encounter_of
from .chart_types import (
    BUNDLE_TYPES,
    MEDICATION_TYPES,
    UNMATCHED_ENCOUNTER,
    ChartEntry,
    ChartError,
    ChartItem,
    KeepCodes,
    MultiplePatientsError,
    Unreadable,
    ValueSetLike,
)
from .fhir import CLINICAL_TIME_FIELDS, clinical_time, coding_tuple, parse_datetime

if TYPE_CHECKING:
    from .chart_asof import History

__all__ = [
    "BUNDLE_TYPES",
    "MEDICATION_TYPES",
    "UNMATCHED_ENCOUNTER",
    "Chart",
    "ChartEntry",
    "ChartError",
    "ChartItem",
    "KeepCodes",
    "MultiplePatientsError",
    "Unreadable",
    "CodedIn",
    "ValueSetLike",
    "bundle_items",
    "coded_in",
    "resource_items",
    "resource_key",
]

T = TypeVar("T")

#: Types a chart built with ``keep`` always holds, whatever their codes.
ALWAYS_KEPT = frozenset({"Patient", "Encounter", "Medication", *MEDICATION_TYPES})


def coded_in(valuesets: Iterable[ValueSetLike]) -> CodedIn:
    """A ``keep`` test for :meth:`Chart.from_items`: some coding is in one of the value
    sets (so a rule reading them can see the resource). Memoised per coding."""
    return CodedIn(valuesets)


class CodedIn:
    """:func:`coded_in`'s test: called with codes, or asked of a concept (:meth:`concept`)."""

    __slots__ = ("_memo", "_sets")

    def __init__(self, valuesets: Iterable[ValueSetLike]) -> None:
        self._sets = tuple(valuesets)
        self._memo: dict[tuple[str, str], bool] = {}

    def __call__(self, codes: tuple[tuple[str, str], ...]) -> bool:
        memo = self._memo
        for coding in codes:
            found = memo.get(coding)
            if found is None:
                found = self._test(coding)
            if found:
                return True
        return False

    def keeps_coding(self, system: str, code: str) -> bool:
        """``self(((system, code),))``: one coding's answer, without making the tuple of
        codes (a population's skimmed lines mostly have one coding)."""
        found = self._memo.get((system, code))
        return self._test((system, code)) if found is None else found

    def _test(self, coding: tuple[str, str]) -> bool:
        system, code = coding
        found = self._memo[coding] = any(vs.contains(system, code) for vs in self._sets)
        return found

    def concept(self, concept: Any) -> bool:
        """``self(coding_tuple(concept))`` without making the tuple (a chart stream asks it
        of every resource of a population)."""
        if not isinstance(concept, dict):
            return False
        found = concept.get("coding")
        if not found:
            return False
        memo = self._memo
        for coding in found:
            if isinstance(coding, dict):
                system, code = coding.get("system"), coding.get("code")
                if isinstance(system, str) and isinstance(code, str):
                    pair = (system, code)
                    hit = memo.get(pair)
                    if hit is None:
                        hit = self._test(pair)
                    if hit:
                        return True
        return False


class Chart:
    """One patient's resources, indexed by key, type and coding."""

    def __init__(
        self,
        entries: Mapping[str, ChartEntry],
        aliases: Mapping[str, str],
        resolver: Resolver | None = None,
    ) -> None:
        """Build the indexes; use :meth:`from_bundle` or :meth:`from_resources` instead."""
        self._entries = dict(entries)
        self._aliases = dict(aliases)
        self._resolver = resolver or Resolver(self._entries, self._aliases)
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
        self._history: History | None = None
        self._with: dict[tuple[str, str], tuple[ChartEntry, ...]] = {}
        self._reasons: dict[str, tuple[tuple[str, str], ...]] = {}
        self._reason_members: dict[int, tuple[Any, tuple[ChartEntry, ...]]] = {}
        self._derived: dict[int, tuple[Any, Any]] = {}
        self._reason_codings: frozenset[tuple[str, str]] | None = None

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
        cls,
        items: Iterable[ChartItem],
        on_unreadable: Unreadable | None = None,
        keep: KeepCodes | None = None,
    ) -> Chart:
        """Chart from items of :func:`bundle_items` / :func:`resource_items` (or a part).

        With ``on_unreadable``, a resource the chart cannot take (two different versions of
        one key, an order whose medication is not in the chart) is left out and reported as
        ``on_unreadable(key, problem)`` instead of raising ChartError (see readable.py).

        With ``keep`` (a test of a resource's codes, see :func:`coded_in`), the chart holds
        only the patient, encounters, medications and Medications, and the resources whose
        codes pass: what rules reading those codes can see (the backtest's charts, so the
        rest costs nothing after its check). Every resource is checked all the same.
        """
        return cls._build(items, on_unreadable, keep)

    @classmethod
    def _build(
        cls,
        items: Iterable[ChartItem],
        on_unreadable: Unreadable | None = None,
        keep: KeepCodes | None = None,
    ) -> Chart:
        """Key every resource, resolve references, then index (one pass over the chart)."""
        keyed: dict[str, tuple[dict[str, Any], str]] = {}
        aliases: dict[str, str] = {}
        conflicting: set[str] = set()
        for full_url, resource, where in items:
            rtype = resource["resourceType"]
            if rtype == "OperationOutcome":
                check_outcome(resource, where)
                continue
            rid = resource.get("id")
            key = f"{rtype}/{rid}" if rid else key_of(resource, full_url, where)
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
            if on_unreadable is not None:  # always: only a lenient chart keeps conflicts
                on_unreadable(key, "it appears twice with different content")
        return cls.indexed(keyed, aliases, bool(conflicting), on_unreadable, keep)

    @classmethod
    def indexed(
        cls,
        keyed: dict[str, tuple[dict[str, Any], str]],
        aliases: dict[str, str],
        conflicting: bool = False,
        on_unreadable: Unreadable | None = None,
        keep: KeepCodes | None = None,
        decided: dict[str, Any] | None = None,
        owners: Iterable[str] = (),
    ) -> Chart:
        """The chart of keyed resources (each key's first version, in chart order), its
        references resolved. ``decided``: keys ``keep`` left out already (chart_stream),
        ``owners`` the references their ``subject`` and ``patient`` hold."""
        # the keys kept and left out are apart (chart_stream): one dict answers as a
        # ChainMap would, in C (a ChainMap's membership test is a Python generator)
        resolver = Resolver({**keyed, **decided} if decided else keyed, aliases)
        target = resolver.target
        timed = CLINICAL_TIME_FIELDS
        entries: dict[str, ChartEntry] = {}
        patients: set[str] = set()
        left_out: list[str] = list(decided or ())
        for reference in owners:
            owner = resolver.named(reference)
            if owner is not None and owner.startswith("Patient/"):
                patients.add(owner)
        # one tight loop: this is most of the cost of evaluating a chart
        for key, (resource, _where) in keyed.items():
            rtype = resource["resourceType"]
            if rtype in MEDICATION_TYPES:
                try:
                    codes = codes_of(resource, rtype, key, resolver)
                except ChartError as error:
                    if on_unreadable is None:
                        raise
                    on_unreadable(key, MEDICATION_PROBLEM.get(error.kind, str(error)))
                    left_out.append(key)
                    continue
            else:
                concept = resource.get("code")
                codes = coding_tuple(concept) if concept else ()
            if keep is not None and rtype not in ALWAYS_KEPT and not keep(codes):
                left_out.append(key)  # checked, never read: not indexed
            elif rtype == "Encounter":
                period = resource.get("period")
                time = parse_datetime(period.get("start")) if isinstance(period, dict) else None
                entries[key] = ChartEntry(key, resource, codes, time, None)
            else:
                time = clinical_time(resource) if rtype in timed else None
                entries[key] = ChartEntry(
                    key, resource, codes, time, encounter_of(resource, target)
                )
            if rtype == "Patient":
                patients.add(key)
                continue
            for element in ("subject", "patient"):
                value = resource.get(element)
                if value is not None:
                    owner = target(value)
                    if owner is not None and owner.startswith("Patient/"):
                        patients.add(owner)
        if len(patients) > 1:
            names = ", ".join(sorted(patients)[:4])
            raise MultiplePatientsError(f"chart: resources of more than one patient ({names})")
        if left_out or conflicting:  # references to them resolve to nothing, as to any absent
            aliases = {url: key for url, key in aliases.items() if key in entries}
            return cls(entries, aliases)
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

    def reason_codes(self, key: str) -> tuple[tuple[str, str], ...]:
        """The (system, code) pairs of an encounter's ``reasonCode`` (memoised: every
        evaluation reads every encounter's reasons)."""
        found = self._reasons.get(key)
        if found is None:
            reasons = self._entries[key].resource.get("reasonCode")
            found = self._reasons[key] = (
                tuple(c for concept in reasons for c in coding_tuple(concept))
                if isinstance(reasons, list)
                else ()
            )
        return found

    def reason_members(self, valueset: ValueSetLike) -> tuple[ChartEntry, ...]:
        """Encounters with a ``reasonCode`` coding in a value set, in chart order (computed
        once per value set, as :meth:`members`)."""
        cached = self._reason_members.get(id(valueset))
        if cached is not None and cached[0] is valueset:
            return cached[1]
        encounters = self.with_element("Encounter", "reasonCode")
        hits = {c for c in self.reason_codings() if valueset.contains(*c)}
        found = (
            tuple(e for e in encounters if not hits.isdisjoint(self.reason_codes(e.key)))
            if hits
            else ()
        )
        self._reason_members[id(valueset)] = (valueset, found)
        return found

    def reason_codings(self) -> frozenset[tuple[str, str]]:
        """Every distinct reasonCode coding of the encounters (each distinct reason is
        tested once per value set)."""
        codings = self._reason_codings
        if codings is None:
            encounters = self.with_element("Encounter", "reasonCode")
            codings = frozenset(c for e in encounters for c in self.reason_codes(e.key))
            self._reason_codings = codings
        return codings

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

    def derived(self, owner: Any, build: Callable[[Chart], T]) -> T:
        """What ``build`` works out from the full chart for ``owner`` (a pack), once per
        chart and owner: the views of a chart (:meth:`as_of`) share it."""
        found = self._derived.get(id(owner))
        if found is not None and found[0] is owner:
            return cast(T, found[1])
        value = build(self)
        # kept with its owner, so the owner's id() cannot be reused meanwhile
        self._derived[id(owner)] = (owner, value)
        return value

    def shown(self, entries: tuple[ChartEntry, ...]) -> tuple[ChartEntry, ...]:
        """Entries of the full chart as this chart shows them (all of them, as they are;
        a view of the chart as of a time hides and revises some)."""
        return entries

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
        from .chart_asof import ChartAsOf  # the view subclasses Chart

        return ChartAsOf(self, self._past(), time, current_encounter)

    def _past(self) -> History:
        """What the views of this chart share (made once; imported only then: chart_asof
        imports this module, and an import statement costs at every call)."""
        history = self._history
        if history is None:
            from .chart_asof import History

            history = self._history = History(self)
        return history

    def appears_at(self, key: str) -> datetime | None:
        """When a resource entered the chart (None: it carries no time, always there)."""
        return self._past().appears(self._entries[key])

    def changes_at(self, key: str) -> datetime | None:
        """When a resource took its recorded form, if it had an earlier one (see
        asof.change_time; worked out once per chart, as :meth:`appears_at`)."""
        return self._past().change(self._entries[key])

    def times_of(
        self, keys: Iterable[str]
    ) -> Iterator[tuple[str, datetime | None, datetime | None]]:
        """Each key with :meth:`appears_at` and :meth:`changes_at` (one pass: the replay
        asks them of every resource the packs read, once per chart)."""
        past, entries = self._past(), self._entries
        appears, change = past.appears, past.change
        for key in keys:
            entry = entries[key]
            yield key, appears(entry), change(entry)

    def full_urls(self) -> dict[str, list[str]]:
        """The fullUrls each key was given in its bundle(s)."""
        out: dict[str, list[str]] = defaultdict(list)
        for url, key in self._aliases.items():
            out[key].append(url)
        return dict(out)
