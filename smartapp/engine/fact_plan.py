"""What a pack's expressions can find in one chart, worked out once per chart and pack.

Every evaluation of a chart (the backtest evaluates one at each moment of each visit, on
views of it as it stood) asks the same selectors for the same value sets. A
:class:`FactPlan` holds, for each selector of the pack, its candidates in the full chart
(entries coded in its value sets, of its types, sorted by key), so an evaluation only
filters them to what was visible then; and the expressions that are false at every time
on this chart because no resource could make them true (``never``), so an evaluation
answers them without looking. Both are what the selectors would compute, never a guess:
a view's candidates are a subset of the full chart's.
"""

from __future__ import annotations

from typing import Any

from .chart import Chart, ChartEntry
from .pack import (
    AllergyExpr,
    AllOf,
    AnyOf,
    ConditionExpr,
    LatestObservationExpr,
    MedicationExpr,
    Not,
    ObservationExpr,
    Pack,
    ServiceRequestExpr,
)

#: Selector expressions and the attribute holding their selector, with the resource types
#: they read (None: the medication types their ``status`` names).
SELECTORS: dict[type, tuple[str, tuple[str, ...] | None]] = {
    ConditionExpr: ("condition", ("Condition",)),
    ObservationExpr: ("observation", ("Observation",)),
    LatestObservationExpr: ("latest_observation_value_at_least", ("Observation",)),
    MedicationExpr: ("medication", None),
    AllergyExpr: ("allergy", ("AllergyIntolerance",)),
    ServiceRequestExpr: ("service_request", ("ServiceRequest",)),
}

#: States of an expression on a chart: false at every time, true at every time without
#: evidence, or depending on the time.
NEVER, ALWAYS, DEPENDS = 0, 1, 2


class FactPlan:
    """One pack's selectors on one full chart: candidates and never-true expressions."""

    def __init__(self, chart: Chart, pack: Pack) -> None:
        self._chart = chart
        self._pack = pack
        #: id(selector) -> its candidates in the full chart, sorted by key
        self.candidates: dict[int, tuple[ChartEntry, ...]] = {}
        #: id(selector of a condition) -> whether some encounter's reasonCode is coded in
        #: one of its value sets (the reasons it can read as conditions)
        self.reasons: dict[int, bool] = {}
        states: dict[str, int] = {}
        self._states = states
        self._expr_states: dict[int, int] = {}
        for name in pack.facts:
            self._fact_state(name)
        for rule in pack.rules:
            self._state(rule.when)
            for withhold in rule.withheld_when:
                self._state(withhold.when)
            if rule.unless is not None:
                self._state(rule.unless)
            for variant in rule.variants or ():
                if variant.when is not None:
                    self._state(variant.when)
            for expr in rule.cautions.values():
                self._state(expr)
        for withhold in pack.document.withholds_all():
            self._state(withhold.when)
        #: fact names false at every time on this chart
        self.never_facts = frozenset(n for n, s in states.items() if s == NEVER)
        #: ids of expression nodes false at every time on this chart
        self.never = frozenset(i for i, s in self._expr_states.items() if s == NEVER)
        #: no rule of the pack can fire on this chart, at any time: every evaluation
        #: suggests and withholds nothing (its notices aside)
        self.silent = all(self._state(rule.when) == NEVER for rule in pack.rules) and all(
            self._reads_nothing(w.when) for w in pack.document.withholds_all()
        )
        # the chart keeps its plan (Chart.derived): a plan keeping the chart would make a
        # cycle, which the backtest (its cyclic garbage collector off) would never free
        del self._chart

    def _fact_state(self, name: str) -> int:
        found = self._states.get(name)
        if found is None:
            self._states[name] = DEPENDS  # the pack loader rejects cycles; a guard all the same
            found = self._states[name] = self._state(self._pack.facts[name])
        return found

    def _state(self, expr: Any) -> int:
        if isinstance(expr, str):
            return self._fact_state(expr)
        found = self._expr_states.get(id(expr))
        if found is None:
            found = self._expr_states[id(expr)] = self._node_state(expr)
        return found

    def _node_state(self, expr: Any) -> int:
        kind = type(expr)
        if kind in SELECTORS:
            attr, types = SELECTORS[kind]
            selector = getattr(expr, attr)
            found = self._candidates(selector, types or tuple(selector.status))
            self.candidates[id(selector)] = found
            if kind is ConditionExpr:
                chart, valuesets = self._chart, self._pack.valuesets
                reasons = any(chart.reason_members(valuesets[v]) for v in selector.valueset)
                self.reasons[id(selector)] = reasons
                return DEPENDS if found or reasons else NEVER
            return DEPENDS if found else NEVER
        if kind is AnyOf:
            states = [self._state(sub) for sub in expr.any_of]
            return NEVER if all(s == NEVER for s in states) else DEPENDS
        if kind is AllOf:
            states = [self._state(sub) for sub in expr.all_of]
            return NEVER if NEVER in states else DEPENDS
        if kind is Not:
            inner = self._state(expr.not_)
            return ALWAYS if inner == NEVER else NEVER if inner == ALWAYS else DEPENDS
        return DEPENDS  # age, death, what the caller could not read: known only then

    def _reads_nothing(self, expr: Any) -> bool:
        """Whether an expression reads no resource but the patient: it cannot fail on a
        malformed one (``withhold_all`` is evaluated even when no rule fires)."""
        if isinstance(expr, str):
            return self._reads_nothing(self._pack.facts[expr])
        kind = type(expr)
        if kind in SELECTORS:
            return self._state(expr) == NEVER
        if kind is AnyOf or kind is AllOf:
            subs = expr.any_of if kind is AnyOf else expr.all_of
            return all(self._reads_nothing(sub) for sub in subs)
        if kind is Not:
            return self._reads_nothing(expr.not_)
        return True  # age, death, what the caller could not read

    def _candidates(self, selector: Any, types: tuple[str, ...]) -> tuple[ChartEntry, ...]:
        """Entries of these types coded in any of the selector's value sets, by key."""
        found: dict[str, ChartEntry] = {}
        for vs_id in selector.valueset:
            for entry in self._chart.members(self._pack.valuesets[vs_id]):
                if entry.resource_type in types:
                    found[entry.key] = entry
        return tuple(found[k] for k in sorted(found))


def fact_plan(chart: Chart, pack: Pack) -> FactPlan:
    """The plan of a pack on a chart's full chart (made once per chart and pack)."""
    return chart.derived(pack, lambda full: FactPlan(full, pack))
