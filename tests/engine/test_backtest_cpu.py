"""What the backtest does to spend less CPU gives what it gave before: the fact plan from
the pack's ordered expressions (``PackPlan``) is the recursive walk's, the keep test of a
concept is the keep test of its codes, visits pickle to themselves, and the ``--json``
report written by orjson is ``json.dumps(..., indent=2)``'s text, and the replay's
decisions (``evaluate.decisions``) are the comparable form of the full evaluation
(``history.outcome``)."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

from smartapp.engine import Chart, Pack
from smartapp.engine.chart import coded_in
from smartapp.engine.evaluate import decisions, evaluate
from smartapp.engine.fact_plan import ALWAYS, DEPENDS, NEVER, SELECTORS, FactPlan, pack_plan
from smartapp.engine.fhir import coding_tuple
from smartapp.engine.history import (
    Outcome,
    Replayed,
    Suggested,
    Visit,
    ed_visits,
    outcome,
)
from smartapp.engine.pack import AllOf, AnyOf, ConditionExpr, Not
from smartapp.rulestools.backtest_report import report_json

from .helpers import SCENARIO_NAMES, scenario_chart


class _Walk:
    """The fact plan's states as a walk of the pack's expressions (the reference)."""

    def __init__(self, chart: Chart, pack: Pack) -> None:
        self.chart, self.pack = chart, pack
        self.facts: dict[str, int] = {}
        self.exprs: dict[int, int] = {}
        for name in pack.facts:
            self.fact(name)
        roots: list[Any] = []
        for rule in pack.rules:
            roots += [rule.when, *(w.when for w in rule.withheld_when)]
            roots += [rule.unless] if rule.unless is not None else []
            roots += [v.when for v in rule.variants or () if v.when is not None]
            roots += list(rule.cautions.values())
        withholds = [w.when for w in pack.document.withholds_all()]
        for root in roots + withholds:
            self.state(root)
        self.silent = all(self.state(rule.when) == NEVER for rule in pack.rules) and all(
            self.reads_nothing(w) for w in withholds
        )

    def reads_nothing(self, expr: Any) -> bool:
        if isinstance(expr, str):
            return self.reads_nothing(self.pack.facts[expr])
        if type(expr) in SELECTORS:
            return self.state(expr) == NEVER
        if type(expr) in (AnyOf, AllOf):
            subs = expr.any_of if type(expr) is AnyOf else expr.all_of
            return all(self.reads_nothing(sub) for sub in subs)
        if type(expr) is Not:
            return self.reads_nothing(expr.not_)
        return True

    def fact(self, name: str) -> int:
        if name not in self.facts:
            self.facts[name] = DEPENDS
            self.facts[name] = self.state(self.pack.facts[name])
        return self.facts[name]

    def state(self, expr: Any) -> int:
        if isinstance(expr, str):
            return self.fact(expr)
        if id(expr) not in self.exprs:
            self.exprs[id(expr)] = self.node(expr)
        return self.exprs[id(expr)]

    def node(self, expr: Any) -> int:
        kind = type(expr)
        if kind in SELECTORS:
            attr, types = SELECTORS[kind]
            selector = getattr(expr, attr)
            wanted = types or tuple(selector.status)
            found = any(
                e.resource_type in wanted
                for v in selector.valueset
                for e in self.chart.members(self.pack.valuesets[v])
            )
            if kind is ConditionExpr:
                valuesets = self.pack.valuesets
                found = found or any(
                    self.chart.reason_members(valuesets[v]) for v in selector.valueset
                )
            return DEPENDS if found else NEVER
        if kind is AnyOf:
            states = [self.state(sub) for sub in expr.any_of]
            return NEVER if all(s == NEVER for s in states) else DEPENDS
        if kind is AllOf:
            states = [self.state(sub) for sub in expr.all_of]
            return NEVER if NEVER in states else DEPENDS
        if kind is Not:
            inner = self.state(expr.not_)
            return ALWAYS if inner == NEVER else NEVER if inner == ALWAYS else DEPENDS
        return DEPENDS


def _same(chart: Chart, pack: Pack) -> None:
    plan, walk = FactPlan(chart, pack), _Walk(chart, pack)
    assert plan.never_facts == {n for n, s in walk.facts.items() if s == NEVER}
    assert plan.never == {i for i, s in walk.exprs.items() if s == NEVER}
    assert plan.silent == walk.silent
    for _op, arg in pack_plan(pack).ops:  # the reasons each condition can read as conditions
        if isinstance(arg, tuple) and arg and arg[0] is ConditionExpr:
            selector = arg[1]
            members = (chart.reason_members(pack.valuesets[v]) for v in selector.valueset)
            assert plan.reasons[id(selector)] == any(members)


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_the_ordered_plan_is_the_walk(pack: Pack, name: str) -> None:
    _same(scenario_chart(name), pack)


def test_the_ordered_plan_is_the_walk_on_a_population(
    pack: Pack, synthea_charts: list[Chart]
) -> None:
    for chart in synthea_charts:
        _same(chart, pack)
    assert any(FactPlan(chart, pack).silent for chart in synthea_charts)


def _same_decisions(chart: Chart, pack: Pack) -> int:
    """The replay's decisions at every moment of every ED visit are the comparable form of
    the full evaluation there; how many moments were compared."""
    visits, _skipped = ed_visits(chart, pack.document.current_encounter, [pack])
    compared = 0
    for visit in visits:
        for time in visit.moments or (visit.time,):
            view = chart.as_of(time, visit.key)
            suggestions, withheld = decisions(view, time, pack, visit.key)
            made = Outcome(tuple(Suggested(*s) for s in suggestions), withheld)
            assert made == outcome(evaluate(view, time, pack, visit.key)), (visit.key, time)
            compared += 1
    return compared


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_the_replays_decisions_are_the_evaluations(pack: Pack, name: str) -> None:
    _same_decisions(scenario_chart(name), pack)


def test_the_replays_decisions_are_the_evaluations_on_a_population(
    pack: Pack, synthea_charts: list[Chart]
) -> None:
    assert sum(_same_decisions(chart, pack) for chart in synthea_charts) > 100


@pytest.mark.parametrize(
    "concept",
    [
        None,
        {},
        [],
        "x",
        {"coding": []},
        {"coding": "abc"},
        {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        {"coding": [{"system": 5, "code": "x"}, {"system": "http://snomed.info/sct"}]},
        {"coding": [None, {"system": "http://snomed.info/sct", "code": "x"}]},
    ],
)
def test_the_keep_test_of_a_concept_is_the_keep_test_of_its_codes(pack: Pack, concept: Any) -> None:
    keep = coded_in(pack.valuesets.values())
    assert keep.concept(concept) == keep(coding_tuple(concept) if concept else ())


def test_the_keep_test_of_the_concepts_of_a_population(
    pack: Pack, synthea_charts: list[Chart]
) -> None:
    keep = coded_in(pack.valuesets.values())
    concepts = [e.resource.get("code") for chart in synthea_charts for e in chart.of_all()]
    kept = [keep.concept(concept) for concept in concepts]
    assert kept == [keep(coding_tuple(c) if c else ()) for c in concepts]
    assert any(kept) and not all(kept)


def test_a_replayed_visit_pickles_to_itself() -> None:
    at = datetime(2026, 1, 2, 3, tzinfo=UTC)
    visit = Visit("Encounter/e", at, None, at, (at,))
    replayed = Replayed("p", visit, ((),), ())
    assert pickle.loads(pickle.dumps(replayed)) == replayed
    assert pickle.loads(pickle.dumps(visit)).id == "e"


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1, "b": [], "c": {}, "d": [1, {"x": None, "y": True}], "e": 'q"\\\n\t'},
        {"a": 1.5},
        {"a": [1e20, 3e-7, -2.0]},
        {"k": "é"},
        {"k": "\x01\x7f"},
        {1: 2},
        {"a": "1.5", "b": "e5", "v1.5": 1},
        {"s": 'x": 1.5'},
        {"n": 2**70},
    ],
)
def test_the_report_text_is_the_standard_encoders(data: Any) -> None:
    assert report_json(data) == json.dumps(data, indent=2)
