"""Evaluating pack expressions against a chart: primitive selectors and combinators.

Each expression gives a :class:`Truth`: whether it holds and the evidence (chart
references) that made it hold. Named facts are evaluated once per evaluation; value
set membership is computed once per value set from the chart's coding index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .chart import Chart, ChartEntry
from .fact_plan import fact_plan
from .fhir import (
    age_in_years,
    coding_tuple,
    codings,
    effective_end,
    status_code,
    supply_length,
    youngest_birth_date,
)
from .pack import (
    AgeAtLeast,
    AgeUnder,
    AllergyExpr,
    AllOf,
    AnyOf,
    ChartIncomplete,
    ConditionExpr,
    ConditionSelector,
    LatestObservationExpr,
    MedicationExpr,
    MedicationSelector,
    Not,
    ObservationExpr,
    Pack,
    PatientDeceased,
    PositiveResult,
    ServiceRequestExpr,
    status_allows,
)


@dataclass(frozen=True, slots=True)
class Truth:
    """The value of an expression and the chart references that support it."""

    value: bool
    evidence: frozenset[str] = frozenset()


FALSE = Truth(False)


def _holds(entries: Iterable[ChartEntry]) -> Truth:
    """True with these entries as evidence, or false if there are none."""
    keys = frozenset(e.key for e in entries)
    return Truth(True, keys) if keys else FALSE


class FactContext:
    """Everything an expression needs: the chart, *now*, the pack, the current visit and
    the resource types the caller could not read completely (``unread``)."""

    def __init__(
        self,
        chart: Chart,
        now: datetime,
        pack: Pack,
        encounter: ChartEntry | None,
        unread: frozenset[str] = frozenset(),
    ) -> None:
        self.chart = chart
        self.now = now
        self.pack = pack
        self.encounter = encounter
        self.unread = unread
        plan = self._plan = fact_plan(chart, pack)
        # facts no resource of this chart can make true, answered without looking
        self._facts: dict[str, Truth] = dict.fromkeys(plan.never_facts, FALSE)
        self._never = plan.never
        rule = pack.document.current_encounter
        start = encounter.time if encounter is not None else None
        self._history_cut = (
            start - rule.condition_history
            if start is not None and rule.condition_history is not None
            else None
        )
        self._diagnoses = (
            diagnosis_keys(chart, encounter.resource)
            if encounter is not None and rule.diagnoses
            else frozenset()
        )

    # expressions --------------------------------------------------------------------

    def eval(self, expr: Any) -> Truth:
        """Evaluate any expression node."""
        if isinstance(expr, str):
            return self.fact(expr)
        if id(expr) in self._never:
            return FALSE
        handler = _HANDLERS[type(expr)]
        return handler(self, expr)

    def fact(self, name: str) -> Truth:
        """A named fact, evaluated at most once (the pack loader rejects cycles)."""
        found = self._facts.get(name)
        if found is None:
            found = self._facts[name] = self.eval(self.pack.facts[name])
        return found

    # chart queries ------------------------------------------------------------------

    def coded(self, valuesets: tuple[str, ...], resource_types: Iterable[str]) -> list[ChartEntry]:
        """Entries of these types whose code is in any of the value sets."""
        types = frozenset(resource_types)
        found: dict[str, ChartEntry] = {}
        for vs_id in valuesets:
            for entry in self._members_of(vs_id):
                if entry.resource_type in types:
                    found[entry.key] = entry
        return [found[k] for k in sorted(found)]

    def selected(self, selector: Any, resource_types: Iterable[str]) -> Sequence[ChartEntry]:
        """``coded(selector.valueset, resource_types)``; for the pack's own selectors, from
        the candidates worked out once for the full chart (see fact_plan)."""
        found = self._plan.candidates.get(id(selector))
        if found is None:
            return self.coded(selector.valueset, resource_types)
        return self.chart.shown(found)

    def may_read_reasons(self, selector: Any) -> bool:
        """False when no encounter's ``reasonCode`` is coded in the selector's value sets
        (``reason_entries`` would find nothing, at any time)."""
        return self._plan.reasons.get(id(selector), True)

    def _members_of(self, vs_id: str) -> tuple[ChartEntry, ...]:
        """Chart entries with at least one coding in a value set (the chart memoises it)."""
        return self.chart.members(self.pack.valuesets[vs_id])

    def this_visit(self, entry: ChartEntry) -> bool:
        """Whether a resource is *this visit* (rules/README.md, "this_visit").

        A Condition timed more than ``condition_history`` before the visit's start never
        is; one the encounter's ``diagnosis`` lists is; otherwise a resource that references
        an encounter is this visit when it is the current one, and one that references none
        when its clinical time is at or after the visit's start.
        """
        if self.encounter is None:
            return False
        if (
            self._history_cut is not None
            and entry.time is not None
            and entry.time < self._history_cut
            and entry.resource_type == "Condition"
        ):
            return False
        if entry.key in self._diagnoses:
            return True
        if entry.encounter is not None:
            return entry.encounter == self.encounter.key
        start = self.encounter.time
        return entry.time is not None and start is not None and entry.time >= start

    def prehospital(self, entry: ChartEntry, window: timedelta | None) -> bool:
        """No encounter reference, timed in ``[start - window, start]`` of the visit."""
        if window is None or self.encounter is None or entry.encounter is not None:
            return False
        start = self.encounter.time
        return (
            entry.time is not None and start is not None and start - window <= entry.time <= start
        )

    def within(self, entry: ChartEntry, window: timedelta | None) -> bool:
        """Clinical time in [now - window, now]; always true without a window."""
        if window is None:
            return True
        return entry.time is not None and self.now - window <= entry.time <= self.now

    def timed(
        self, entry: ChartEntry, selector: Any, history: tuple[str, ...] | None = None
    ) -> bool:
        """Apply a selector's ``this_visit``/``not_this_visit`` and ``within`` filters.

        ``history``: value sets whose codes are never this visit (``history_codes``).
        """
        if selector.this_visit or selector.not_this_visit:
            here = self.this_visit(entry) and not (history and self.in_any(entry, history))
            # a selector's fields are its __dict__ (most have no prehospital: no exception)
            if selector.this_visit and not (
                here or self.prehospital(entry, vars(selector).get("prehospital"))
            ):
                return False
            if selector.not_this_visit and here:
                return False
        return self.within(entry, selector.within)

    def in_any(self, entry: ChartEntry, valuesets: tuple[str, ...], reasons: bool = False) -> bool:
        """Whether any coding of the entry (with ``reasons``: of the encounter's
        ``reasonCode``) is in any of these value sets."""
        sets = [self.pack.valuesets[v] for v in valuesets]
        codes = self.chart.reason_codes(entry.key) if reasons else entry.codes
        return any(vs.contains(system, code) for vs in sets for system, code in codes)

    def reason_entries(self, valuesets: tuple[str, ...], earlier: bool) -> list[ChartEntry]:
        """Encounters' ``reasonCode`` in any of these value sets, as condition-like entries
        keyed by the Encounter and timed at its start: the current encounter's (when the
        pack counts them), and with ``earlier`` every other encounter's too."""
        rule = self.pack.document.current_encounter
        current = self.encounter
        found: list[ChartEntry] = []
        if current is not None and rule.reason_codes and self.in_any(current, valuesets, True):
            found.append(current)
        if earlier:
            for vs_id in valuesets:
                found.extend(
                    e
                    for e in self.chart.reason_members(self.pack.valuesets[vs_id])
                    if current is None or e.key != current.key
                )
        return [
            ChartEntry(e.key, e.resource, codes, e.time, e.key)
            for e in found
            if (codes := self.chart.reason_codes(e.key))
        ]


# ---------------------------------------------------------------------------------------
# handlers, one per expression model


def _any_of(ctx: FactContext, expr: AnyOf) -> Truth:
    results = [ctx.eval(sub) for sub in expr.any_of]
    true = [r for r in results if r.value]
    return Truth(True, frozenset().union(*(r.evidence for r in true))) if true else FALSE


def _all_of(ctx: FactContext, expr: AllOf) -> Truth:
    evidence: set[str] = set()
    for sub in expr.all_of:
        result = ctx.eval(sub)
        if not result.value:
            return FALSE
        evidence |= result.evidence
    return Truth(True, frozenset(evidence))


def _not(ctx: FactContext, expr: Not) -> Truth:
    return FALSE if ctx.eval(expr.not_).value else Truth(True)


def _status(resource: dict[str, Any], element: str) -> str | None:
    return status_code(resource.get(element))


def diagnosis_keys(chart: Chart, encounter: dict[str, Any]) -> frozenset[str]:
    """Keys of the Conditions an encounter's ``diagnosis`` list references."""
    keys = set()
    for item in encounter.get("diagnosis") or ():
        ref = item.get("condition") if isinstance(item, dict) else None
        target = ref.get("reference") if isinstance(ref, dict) else None
        key = chart.resolve(target.strip()) if isinstance(target, str) else None
        if key is not None and key.startswith("Condition/"):
            keys.add(key)
    return frozenset(keys)


def reason_entry(encounter: ChartEntry) -> ChartEntry | None:
    """An encounter's ``reasonCode`` codes as an entry that references the encounter itself
    (so it is this visit exactly when the encounter is the current one)."""
    reasons = encounter.resource.get("reasonCode")
    if not isinstance(reasons, list):
        return None
    codes = tuple(c for concept in reasons for c in coding_tuple(concept))
    if not codes:
        return None
    return ChartEntry(encounter.key, encounter.resource, codes, encounter.time, encounter.key)


#: Statuses an encounter reason reads with: an active condition, verification absent.
_REASON_STATUS = ("active", None)


def _condition_statuses(sel: ConditionSelector, clinical: str | None, verif: str | None) -> bool:
    """Clinical status (any, without a filter) and verification status pass the selector."""
    return (sel.clinical_status is None or status_allows(sel.clinical_status, clinical)) and (
        status_allows(sel.verification_status, verif)
    )


def _condition(ctx: FactContext, expr: ConditionExpr) -> Truth:
    """Conditions, and encounter reasons read as active conditions (evidence: Encounter)."""
    sel = expr.condition
    hits = [
        e
        for e in ctx.selected(sel, ("Condition",))
        if _condition_statuses(
            sel, _status(e.resource, "clinicalStatus"), _status(e.resource, "verificationStatus")
        )
        and ctx.timed(e, sel, sel.history_codes)
    ]
    if ctx.may_read_reasons(sel) and _condition_statuses(sel, *_REASON_STATUS):
        hits.extend(
            e
            for e in ctx.reason_entries(sel.valueset, sel.earlier_encounter_reasons)
            if ctx.timed(e, sel, sel.history_codes)
        )
    return _holds(hits)


def _observation(ctx: FactContext, expr: ObservationExpr) -> Truth:
    sel = expr.observation
    return _holds(
        e
        for e in ctx.selected(sel, ("Observation",))
        if status_allows(sel.status, _status(e.resource, "status"))
        and (sel.positive is None or is_positive(e.resource, sel.positive))
        and ctx.timed(e, sel)
    )


def is_positive(observation: dict[str, Any], rule: PositiveResult) -> bool:
    """A positive coded value, a positive interpretation, or an exact positive string."""
    wanted_values = {(c.system, c.code) for c in rule.value_codes}
    if any(c in wanted_values for c in codings(observation.get("valueCodeableConcept"))):
        return True
    wanted_interpretations = {(c.system, c.code) for c in rule.interpretations}
    for concept in observation.get("interpretation") or ():
        if any(c in wanted_interpretations for c in codings(concept)):
            return True
    text = observation.get("valueString")
    strings = {s.strip().casefold() for s in rule.value_strings}
    return isinstance(text, str) and text.strip().casefold() in strings


def numeric_value(observation: dict[str, Any]) -> float | None:
    """valueQuantity.value or valueInteger, if numeric."""
    quantity = observation.get("valueQuantity")
    value = quantity.get("value") if isinstance(quantity, dict) else observation.get("valueInteger")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _latest_observation(ctx: FactContext, expr: LatestObservationExpr) -> Truth:
    """The newest numeric result in the window decides; at equal times the lowest value."""
    sel = expr.latest_observation_value_at_least
    scored = [
        (e.time, -value, e)
        for e in ctx.selected(sel, ("Observation",))
        if status_allows(sel.status, _status(e.resource, "status"))
        and ctx.timed(e, sel)
        and (value := numeric_value(e.resource)) is not None
    ]
    if not scored:
        return FALSE
    _time, neg_value, latest = max(scored, key=lambda s: (s[0], s[1]))
    return Truth(True, frozenset({latest.key})) if -neg_value >= sel.at_least else FALSE


def _medication(ctx: FactContext, expr: MedicationExpr) -> Truth:
    sel = expr.medication
    return _holds(
        e
        for e in ctx.selected(sel, sel.status)
        if status_allows(sel.status_of(e.resource_type), _status(e.resource, "status"))
        and _intent_allows(sel, e)
        and ctx.timed(e, sel)
        and supply_allows(sel, e, ctx.now)
    )


def _intent_allows(sel: MedicationSelector, entry: ChartEntry) -> bool:
    """A MedicationRequest's intent passes the selector's intent filter (others always)."""
    if sel.intent is None or entry.resource_type != "MedicationRequest":
        return True
    return status_allows(sel.intent, _status(entry.resource, "intent"))


def supply_allows(sel: MedicationSelector, entry: ChartEntry, now: datetime) -> bool:
    """The selector's supply filters: covering *now*, or ended within the window."""
    if sel.supply_covers_now is not None and not supply_covers(entry, now, sel.supply_covers_now):
        return False
    if sel.supply_ended_within is not None:
        end = supply_end(entry)
        started = entry.time is None or entry.time <= now
        return started and end is not None and end >= now - sel.supply_ended_within
    return True


def supply_covers(entry: ChartEntry, now: datetime, default: timedelta) -> bool:
    """Handed over (or authored) at or before *now*, and its supply (else ``default``)
    reaches *now*: ``time + supply >= now``."""
    if entry.time is None or entry.time > now:
        return False
    length = supply_length(entry.resource)
    return entry.time + (length if length is not None else default) >= now


def supply_end(entry: ChartEntry) -> datetime | None:
    """When a medication stopped acting: the end of its effective period, else its time
    plus its supply (``daysSupply``, ``expectedSupplyDuration``), else its time."""
    end = effective_end(entry.resource)
    if end is not None:
        return end
    if entry.time is None:
        return None
    length = supply_length(entry.resource)
    return entry.time + length if length is not None else entry.time


def _allergy(ctx: FactContext, expr: AllergyExpr) -> Truth:
    sel = expr.allergy
    return _holds(
        e
        for e in ctx.selected(sel, ("AllergyIntolerance",))
        if status_allows(sel.clinical_status, _status(e.resource, "clinicalStatus"))
        and status_allows(sel.verification_status, _status(e.resource, "verificationStatus"))
    )


def _service_request(ctx: FactContext, expr: ServiceRequestExpr) -> Truth:
    sel = expr.service_request
    return _holds(
        e
        for e in ctx.selected(sel, ("ServiceRequest",))
        if status_allows(sel.status, _status(e.resource, "status")) and ctx.timed(e, sel)
    )


def _age_at_least(ctx: FactContext, expr: AgeAtLeast) -> Truth:
    """Unknown birth date: false, so no age-gated suggestion fires on a guess."""
    patient = ctx.chart.patient or {}
    birth = youngest_birth_date(patient.get("birthDate"))
    if birth is None:
        return FALSE
    return Truth(age_in_years(birth, ctx.now.date()) >= expr.age_at_least)


def _age_under(ctx: FactContext, expr: AgeUnder) -> Truth:
    """Younger than N, or no usable birth date; the Patient is the evidence."""
    patients = ctx.chart.of_type("Patient")
    birth = youngest_birth_date(patients[0].resource.get("birthDate")) if patients else None
    if birth is not None and age_in_years(birth, ctx.now.date()) >= expr.age_under:
        return FALSE
    return Truth(True, frozenset({patients[0].key}) if patients else frozenset())


def _patient_deceased(ctx: FactContext, _expr: PatientDeceased) -> Truth:
    """Deceased, with the Patient as evidence."""
    patients = ctx.chart.of_type("Patient")
    patient = patients[0].resource if patients else {}
    deceased = patient.get("deceasedBoolean") is True or bool(patient.get("deceasedDateTime"))
    return Truth(True, frozenset({patients[0].key})) if deceased else FALSE


def _chart_incomplete(ctx: FactContext, expr: ChartIncomplete) -> Truth:
    """Any of these types is among those the caller could not read (no evidence)."""
    return Truth(any(t in ctx.unread for t in expr.chart_incomplete))


_HANDLERS: dict[type, Any] = {
    AnyOf: _any_of,
    AllOf: _all_of,
    Not: _not,
    ConditionExpr: _condition,
    ObservationExpr: _observation,
    LatestObservationExpr: _latest_observation,
    MedicationExpr: _medication,
    AllergyExpr: _allergy,
    ServiceRequestExpr: _service_request,
    AgeAtLeast: _age_at_least,
    AgeUnder: _age_under,
    PatientDeceased: _patient_deceased,
    ChartIncomplete: _chart_incomplete,
}
