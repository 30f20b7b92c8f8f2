"""Evaluating pack expressions against a chart: primitive selectors and combinators.

Each expression gives a :class:`Truth`: whether it holds and the evidence (chart
references) that made it hold. Named facts are evaluated once per evaluation; value
set membership is computed once per value set from the chart's coding index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .chart import Chart, ChartEntry
from .fhir import age_in_years, codings, status_code, youngest_birth_date
from .pack import (
    AgeAtLeast,
    AllergyExpr,
    AllOf,
    AnyOf,
    ConditionExpr,
    LatestObservationExpr,
    MedicationExpr,
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
    """Everything an expression needs: the chart, *now*, the pack and the current visit."""

    def __init__(
        self, chart: Chart, now: datetime, pack: Pack, encounter: ChartEntry | None
    ) -> None:
        self.chart = chart
        self.now = now
        self.pack = pack
        self.encounter = encounter
        self._facts: dict[str, Truth] = {}

    # expressions --------------------------------------------------------------------

    def eval(self, expr: Any) -> Truth:
        """Evaluate any expression node."""
        if isinstance(expr, str):
            return self.fact(expr)
        handler = _HANDLERS[type(expr)]
        return handler(self, expr)

    def fact(self, name: str) -> Truth:
        """A named fact, evaluated at most once (the pack loader rejects cycles)."""
        if name not in self._facts:
            self._facts[name] = self.eval(self.pack.facts[name])
        return self._facts[name]

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

    def _members_of(self, vs_id: str) -> tuple[ChartEntry, ...]:
        """Chart entries with at least one coding in a value set (the chart memoises it)."""
        return self.chart.members(self.pack.valuesets[vs_id])

    def this_visit(self, entry: ChartEntry) -> bool:
        """References the current encounter, or names none and happened since it began."""
        if self.encounter is None:
            return False
        if entry.encounter is not None:
            return entry.encounter == self.encounter.key
        start = self.encounter.time
        return entry.time is not None and start is not None and entry.time >= start

    def within(self, entry: ChartEntry, window: timedelta | None) -> bool:
        """Clinical time in [now - window, now]; always true without a window."""
        if window is None:
            return True
        return entry.time is not None and self.now - window <= entry.time <= self.now

    def timed(self, entry: ChartEntry, selector: Any) -> bool:
        """Apply a selector's ``this_visit`` and ``within`` filters."""
        if selector.this_visit and not self.this_visit(entry):
            return False
        return self.within(entry, selector.within)


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


def _condition(ctx: FactContext, expr: ConditionExpr) -> Truth:
    sel = expr.condition
    return _holds(
        e
        for e in ctx.coded(sel.valueset, ("Condition",))
        if status_allows(sel.clinical_status, _status(e.resource, "clinicalStatus"))
        and status_allows(sel.verification_status, _status(e.resource, "verificationStatus"))
        and ctx.timed(e, sel)
    )


def _observation(ctx: FactContext, expr: ObservationExpr) -> Truth:
    sel = expr.observation
    return _holds(
        e
        for e in ctx.coded(sel.valueset, ("Observation",))
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
        for e in ctx.coded(sel.valueset, ("Observation",))
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
        for e in ctx.coded(sel.valueset, sel.status)
        if status_allows(sel.status[e.resource_type], _status(e.resource, "status"))
        and ctx.timed(e, sel)
    )


def _allergy(ctx: FactContext, expr: AllergyExpr) -> Truth:
    sel = expr.allergy
    return _holds(
        e
        for e in ctx.coded(sel.valueset, ("AllergyIntolerance",))
        if status_allows(sel.clinical_status, _status(e.resource, "clinicalStatus"))
        and status_allows(sel.verification_status, _status(e.resource, "verificationStatus"))
    )


def _service_request(ctx: FactContext, expr: ServiceRequestExpr) -> Truth:
    sel = expr.service_request
    return _holds(
        e
        for e in ctx.coded(sel.valueset, ("ServiceRequest",))
        if status_allows(sel.status, _status(e.resource, "status")) and ctx.timed(e, sel)
    )


def _age_at_least(ctx: FactContext, expr: AgeAtLeast) -> Truth:
    """Unknown birth date: false, so no age-gated suggestion fires on a guess."""
    patient = ctx.chart.patient or {}
    birth = youngest_birth_date(patient.get("birthDate"))
    if birth is None:
        return FALSE
    return Truth(age_in_years(birth, ctx.now.date()) >= expr.age_at_least)


def _patient_deceased(ctx: FactContext, _expr: PatientDeceased) -> Truth:
    patient = ctx.chart.patient or {}
    deceased = patient.get("deceasedBoolean") is True or bool(patient.get("deceasedDateTime"))
    return Truth(deceased)


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
    PatientDeceased: _patient_deceased,
}
