"""What a pack's expressions can find in one chart, worked out once per chart and pack.

Every evaluation of a chart (the backtest evaluates one at each moment of each visit, on
views of it as it stood) asks the same selectors for the same value sets. A
:class:`FactPlan` holds, for each selector of the pack, its candidates in the full chart
(entries coded in its value sets, of its types, sorted by key), so an evaluation only
filters them to what was visible then; and the expressions that are false at every time
on this chart because no resource could make them true (``never``), so an evaluation
answers them without looking. Both are what the selectors would compute, never a guess:
a view's candidates are a subset of the full chart's.

The pack's expressions are put in order once per pack (:class:`PackPlan`: each node after
its parts), so a chart's plan is one pass over that list, not a walk of the pack.
"""

from __future__ import annotations

import weakref
from datetime import timedelta
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
        plan = self._plan = pack_plan(pack)
        #: the condition selectors' value sets some encounter's reasonCode is coded in
        self._reason_sets: frozenset[str] | None = None
        states = plan.states(self)
        #: fact names false at every time on this chart
        self.never_facts = frozenset(n for n, slot in plan.facts if states[slot] == NEVER)
        #: ids of expression nodes false at every time on this chart
        self.never = frozenset(
            i for i, state in zip(plan.ids, states, strict=True) if state == NEVER
        )
        #: no rule of the pack can fire on this chart, at any time: every evaluation
        #: suggests and withholds nothing (its notices aside)
        self.silent = all(states[slot] == NEVER for slot in plan.whens) and all(
            states[slot] == NEVER for slots in plan.withhold_reads for slot in slots
        )
        # the chart keeps its plan (Chart.derived): a plan keeping the chart would make a
        # cycle, which the backtest (its cyclic garbage collector off) would never free
        del self._chart, self._plan, self._reason_sets

    def selector_state(self, kind: type, selector: Any, types: tuple[str, ...]) -> int:
        """A selector's state on the chart (its candidates and reasons kept)."""
        found = self._candidates(selector, types)
        self.candidates[id(selector)] = found
        if kind is ConditionExpr:
            if self._reason_sets is None:
                self._reason_sets = self._plan.reason_sets(self._chart.reason_codings())
            reasons = not self._reason_sets.isdisjoint(selector.valueset)
            self.reasons[id(selector)] = reasons
            return DEPENDS if found or reasons else NEVER
        return DEPENDS if found else NEVER

    def _candidates(self, selector: Any, types: tuple[str, ...]) -> tuple[ChartEntry, ...]:
        """Entries of these types coded in any of the selector's value sets, by key."""
        found: dict[str, ChartEntry] = {}
        for vs_id in selector.valueset:
            for entry in self._chart.members(self._pack.valuesets[vs_id]):
                if entry.resource_type in types:
                    found[entry.key] = entry
        return tuple(found[k] for k in sorted(found))


#: Reason codings a pack plan remembers the value sets of (a bound on its memory).
_CODINGS_KEPT = 100_000
#: Operations of a pack plan: a selector, any of, all of, not, anything else.
_SELECTOR, _ANY, _ALL, _NOT, _OTHER = range(5)


class PackPlan:
    """A pack's expression nodes, each after its parts (worked out once per pack), so a
    chart's :class:`FactPlan` is one pass: what ``_state`` would find, node by node."""

    def __init__(self, pack: Pack) -> None:
        self._pack = pack
        self.ids: list[int] = []  # slot -> id(expression node)
        self.ops: list[tuple[int, Any]] = []  # slot -> (operation, its argument)
        self._slots: dict[int, int] = {}  # id(node) -> slot
        self._fact_slots: dict[str, int] = {}
        self._busy: set[str] = set()
        self._guard = object()  # a fact met again in its own walk: known only then
        #: the condition selectors' value sets (a reasonCode reads as a condition), and for
        #: each reason coding met, those of them it is in (reason_sets)
        self._valuesets = pack.valuesets
        self._coding_sets: dict[tuple[str, str], frozenset[str]] = {}
        self._depends = self._add(self._guard, _OTHER, None)
        for name in pack.facts:
            self._fact(name)
        roots: list[Any] = []
        for rule in pack.rules:
            roots.append(rule.when)
            roots.extend(withhold.when for withhold in rule.withheld_when)
            if rule.unless is not None:
                roots.append(rule.unless)
            roots.extend(v.when for v in rule.variants or () if v.when is not None)
            roots.extend(rule.cautions.values())
        withholds = pack.document.withholds_all()
        roots.extend(withhold.when for withhold in withholds)
        for root in roots:
            self._node(root)
        #: each selector expression's kind and selector, in plan order
        self.selectors: list[tuple[type, Any]] = [
            (arg[0], arg[1]) for op, arg in self.ops if op == _SELECTOR
        ]
        #: the selectors that read ``now`` (moment_guard): each with its ``within`` window,
        #: whether it reads encounter reasons (a condition's), whether it has supply filters
        self.now_reads: list[tuple[Any, timedelta | None, bool, bool]] = []
        for kind, selector in self.selectors:
            window = getattr(selector, "within", None)  # (an allergy's has none)
            supply = kind is MedicationExpr and (
                selector.supply_covers_now is not None or selector.supply_ended_within is not None
            )
            if window is not None or supply:
                self.now_reads.append((selector, window, kind is ConditionExpr, supply))
        self._reason_valuesets: frozenset[str] = frozenset(
            v
            for kind, selector in self.selectors
            if kind is ConditionExpr
            for v in selector.valueset
        )
        #: (fact name, its slot); the slots of the rules' ``when``
        self.facts = list(self._fact_slots.items())
        self.whens = [self._node(rule.when) for rule in pack.rules]
        #: for each ``withhold_all``, the selectors it reads (it reads nothing else when
        #: all are false at every time: ``_reads_nothing``)
        self.withhold_reads = [self._reads(w.when) for w in withholds]
        del self._busy, self._pack  # the plan does not keep its pack (see pack_plan)

    def reason_sets(self, codings: frozenset[tuple[str, str]]) -> frozenset[str]:
        """The condition selectors' value sets any of these reasonCode codings is in (each
        coding tested once per pack: a population's reasons repeat)."""
        found: set[str] = set()
        memo = self._coding_sets
        for coding in codings:
            sets = memo.get(coding)
            if sets is None:
                system, code = coding
                sets = frozenset(
                    v for v in self._reason_valuesets if self._valuesets[v].contains(system, code)
                )
                if len(memo) < _CODINGS_KEPT:
                    memo[coding] = sets
            found |= sets
        return frozenset(found)

    def _add(self, node: Any, op: int, arg: Any) -> int:
        slot = self._slots[id(node)] = len(self.ids)
        self.ids.append(id(node))
        self.ops.append((op, arg))
        return slot

    def _fact(self, name: str) -> int:
        found = self._fact_slots.get(name)
        if found is None:
            if name in self._busy:  # the pack loader rejects cycles; a guard all the same
                return self._depends
            self._busy.add(name)
            found = self._fact_slots[name] = self._node(self._pack.facts[name])
        return found

    def _node(self, expr: Any) -> int:
        if isinstance(expr, str):
            return self._fact(expr)
        found = self._slots.get(id(expr))
        if found is not None:
            return found
        kind = type(expr)
        if kind in SELECTORS:
            attr, types = SELECTORS[kind]
            selector = getattr(expr, attr)
            return self._add(expr, _SELECTOR, (kind, selector, types or tuple(selector.status)))
        if kind is AnyOf or kind is AllOf:
            subs = tuple(self._node(sub) for sub in (expr.any_of if kind is AnyOf else expr.all_of))
            return self._add(expr, _ANY if kind is AnyOf else _ALL, subs)
        if kind is Not:
            return self._add(expr, _NOT, self._node(expr.not_))
        return self._add(expr, _OTHER, None)

    def _reads(self, expr: Any) -> tuple[int, ...]:
        """The slots of the selectors an expression reads (through facts, combinators)."""
        if isinstance(expr, str):
            return self._reads(self._pack.facts[expr])
        kind = type(expr)
        if kind in SELECTORS:
            return (self._slots[id(expr)],)
        if kind is AnyOf or kind is AllOf:
            subs = expr.any_of if kind is AnyOf else expr.all_of
            return tuple(slot for sub in subs for slot in self._reads(sub))
        if kind is Not:
            return self._reads(expr.not_)
        return ()

    def states(self, plan: FactPlan) -> list[int]:
        """Each slot's state on the chart of ``plan`` (which keeps the candidates)."""
        states: list[int] = []
        for op, arg in self.ops:
            if op == _SELECTOR:
                state = plan.selector_state(*arg)
            elif op == _ANY:
                state = NEVER if all(states[s] == NEVER for s in arg) else DEPENDS
            elif op == _ALL:
                state = NEVER if any(states[s] == NEVER for s in arg) else DEPENDS
            elif op == _NOT:
                inner = states[arg]
                state = ALWAYS if inner == NEVER else NEVER if inner == ALWAYS else DEPENDS
            else:
                state = DEPENDS  # age, death, what the caller could not read: known only then
            states.append(state)
        return states


_PLANS: dict[int, tuple[weakref.ref[Pack], PackPlan]] = {}


def pack_plan(pack: Pack) -> PackPlan:
    """The pack's plan, made once per pack and let go with it (a process that loads
    packs again and again keeps only the plans of those alive)."""
    key = id(pack)
    found = _PLANS.get(key)
    if found is None or found[0]() is not pack:
        found = _PLANS[key] = (weakref.ref(pack), PackPlan(pack))
        weakref.finalize(pack, _forget, key, found[0])
    return found[1]


def _forget(key: int, ref: weakref.ref[Pack]) -> None:
    """A pack is gone: its plan too (unless its id() is another pack's already)."""
    found = _PLANS.get(key)
    if found is not None and found[0] is ref:
        del _PLANS[key]


def fact_plan(chart: Chart, pack: Pack) -> FactPlan:
    """The plan of a pack on a chart's full chart (made once per chart and pack)."""
    return chart.derived(pack, lambda full: FactPlan(full, pack))
