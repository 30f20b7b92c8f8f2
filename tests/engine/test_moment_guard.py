"""The replay's moment guard (``moment_guard``): a moment is not evaluated again only when
its outcome cannot differ from the last one evaluated, so every replay is the one that
evaluates each moment; and each reason it must evaluate (a resource read that came or
changed, a window or supply that a resource crosses, a new date) is seen."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from smartapp.engine import Chart, Pack
from smartapp.engine import moment_guard as guard
from smartapp.engine.fact_plan import fact_plan, pack_plan
from smartapp.engine.facts import supply_allows, supply_end
from smartapp.engine.history import ed_visits, replay
from smartapp.engine.pack import MedicationExpr

from .helpers import SCENARIO_NAMES, scenario_chart


def _replays(charts: list[Chart], pack: Pack, monkeypatch: pytest.MonkeyPatch) -> int:
    """Each chart's replay with the guard is its replay evaluating every moment; how many
    moments the guard spared."""
    spared = 0
    unchanged = guard.unchanged

    def counted(*args: Any) -> bool:
        nonlocal spared
        found = unchanged(*args)
        spared += found
        return found

    for chart in charts:
        with monkeypatch.context() as patch:
            patch.setattr(guard, "unchanged", counted)
            guarded = replay(chart, [pack])
        with monkeypatch.context() as patch:
            patch.setattr(guard, "unchanged", lambda *args: False)
            assert guarded == replay(chart, [pack])
    return spared


def test_the_guarded_replay_is_the_full_one_on_the_scenarios(
    pack: Pack, monkeypatch: pytest.MonkeyPatch
) -> None:
    _replays([scenario_chart(name) for name in SCENARIO_NAMES], pack, monkeypatch)


def test_the_guarded_replay_is_the_full_one_on_a_population(
    pack: Pack, synthea_charts: list[Chart], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _replays(synthea_charts, pack, monkeypatch) > 100  # most second moments are spared


def _visit(chart: Chart, pack: Pack) -> str:
    visits, _skipped = ed_visits(chart, pack.document.current_encounter, [pack])
    return visits[0].key


def _windowed(chart: Chart, pack: Pack, window: timedelta) -> Any:
    """A resource the pack reads through a selector with this ``within`` window."""
    plan = fact_plan(chart, pack)
    for _kind, selector in pack_plan(pack).selectors:
        if getattr(selector, "within", None) == window:
            for entry in plan.candidates.get(id(selector), ()):
                if entry.time is not None:
                    return entry
    raise AssertionError("no resource read through that window")


def test_a_resource_leaving_a_window_is_a_reason_to_evaluate(pack: Pack) -> None:
    chart = scenario_chart("P01-oud-withdrawal")
    visit = _visit(chart, pack)
    cows = _windowed(chart, pack, timedelta(hours=12))  # cows_lookback
    leaves = cows.time + timedelta(hours=12)
    later = leaves + timedelta(minutes=1)
    assert guard.unchanged(chart, visit, [pack], later, later + timedelta(minutes=1))
    assert not guard.unchanged(chart, visit, [pack], leaves - timedelta(minutes=1), later)
    with pytest.MonkeyPatch.context() as patch:  # the window, and nothing else
        patch.setattr(guard, "_same_windows", lambda *args: True)
        assert guard.unchanged(chart, visit, [pack], leaves - timedelta(minutes=1), later)
    assert not guard.unchanged(chart, visit, [pack], later, later + timedelta(days=1))  # a date


def test_a_resource_that_comes_is_a_reason_to_evaluate(pack: Pack) -> None:
    chart = scenario_chart("P01-oud-withdrawal")
    visit = _visit(chart, pack)
    cows = _windowed(chart, pack, timedelta(hours=12))
    comes = chart.appears_at(cows.key)
    assert comes is not None
    assert not guard.unchanged(
        chart, visit, [pack], comes - timedelta(seconds=1), comes + timedelta(seconds=1)
    )


def test_the_visits_own_encounter_changing_is_no_reason(
    pack: Pack, synthea_charts: list[Chart]
) -> None:
    """The encounter shows in progress at every moment of its visit, whatever its end."""
    for chart in synthea_charts:
        found = guard.changes(chart, [pack])
        for visit in ed_visits(chart, pack.document.current_encounter, [pack])[0]:
            ends = chart.changes_at(visit.key)
            if ends is not None and found.keys[found.times.index(ends)] == {visit.key}:
                earlier = ends - timedelta(seconds=1)
                if earlier.date() == ends.date():
                    assert guard.unchanged(chart, visit.key, [pack], earlier, ends)
                    assert not guard.unchanged(chart, "Encounter/other", [pack], earlier, ends)
                    return
    raise AssertionError("no visit whose encounter alone changes at its end")


def test_a_supply_that_runs_out_is_a_reason_to_evaluate(
    pack: Pack, synthea_charts: list[Chart]
) -> None:
    charts = [scenario_chart(name) for name in SCENARIO_NAMES] + synthea_charts
    for chart in charts:
        plan = fact_plan(chart, pack)
        for kind, selector in pack_plan(pack).selectors:
            if kind is not MedicationExpr or selector.supply_covers_now is None:
                continue
            for entry in plan.candidates.get(id(selector), ()):
                end = supply_end(entry)
                if end is None or entry.time is None or end == entry.time:
                    continue
                after = end + timedelta(minutes=1)
                if supply_allows(selector, entry, end) == supply_allows(selector, entry, after):
                    continue
                with pytest.MonkeyPatch.context() as patch:  # the supply, and nothing else
                    patch.setattr(guard, "supply_allows", lambda *args: True)
                    if not guard.unchanged(chart, "Encounter/none", [pack], end, after):
                        continue
                assert not guard.unchanged(chart, "Encounter/none", [pack], end, after)
                return
    raise AssertionError("no medication whose supply runs out, read through a supply filter")
