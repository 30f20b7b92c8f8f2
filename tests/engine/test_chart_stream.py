"""A chart built as its resources are read (``chart_stream``) is ``Chart.from_items`` of the
same items: the same entries and indexes, the same errors; and the per-chart plan of a
pack's selectors (``fact_plan``) changes no evaluation and leaves no cycle to collect."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from benchmarks.population import write_population
from smartapp.engine import Chart, ChartError, Pack, evaluate, facts, history
from smartapp.engine.chart import ChartItem, MultiplePatientsError, coded_in
from smartapp.engine.chart_stream import ChartStream
from smartapp.engine.evaluate import select_encounter
from smartapp.engine.fact_plan import fact_plan
from smartapp.engine.facts import FactContext
from smartapp.engine.history import ed_visits, replay, split_by_patient
from smartapp.rulestools.backtest_input import read_ndjson_files

from .helpers import NOW, SCENARIO_NAMES, scenario_chart

PATIENT = {"resourceType": "Patient", "id": "p"}
SUBJECT = {"reference": "Patient/p"}
VITAL = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}  # heart rate


def _streamed(items: list[ChartItem], keep: Any, raw: bool = True) -> Chart:
    stream = ChartStream(keep, orjson.loads if raw else None)
    for _url, resource, where in items:
        stream.add(resource, where, orjson.dumps(resource) if raw else None)
    return stream.chart()


def _shape(chart: Chart) -> list[tuple[Any, ...]]:
    return [(e.key, e.resource, e.codes, e.time, e.encounter) for e in chart.of_all()]


@pytest.fixture(scope="module")
def synthea_groups(tmp_path_factory: pytest.TempPathFactory) -> list[list[ChartItem]]:
    """The Synthea patients as a bulk export reads them: each patient's resources."""
    folder = write_population(tmp_path_factory.mktemp("population") / "ndjson", 100)
    items = read_ndjson_files(sorted(folder.glob("*.ndjson")))
    return [group for key, group in split_by_patient(items).items() if key]


@pytest.mark.parametrize("raw", [True, False])
def test_a_streamed_chart_is_the_chart_of_its_items(
    pack: Pack, raw: bool, synthea_groups: list[list[ChartItem]]
) -> None:
    keep = coded_in(pack.valuesets.values())
    visits_seen = 0
    for group in synthea_groups[::3]:
        streamed, built = _streamed(group, keep, raw), Chart.from_items(group, keep=keep)
        assert _shape(streamed) == _shape(built)
        assert streamed.codes_in_system("http://snomed.info/sct") == built.codes_in_system(
            "http://snomed.info/sct"
        )
        rule = pack.document.current_encounter
        visits, _ = ed_visits(streamed, rule, [pack])
        assert replay(streamed, [pack], visits) == replay(built, [pack], visits)
        visits_seen += len(visits)
    assert visits_seen


def _items(*resources: dict[str, Any]) -> list[ChartItem]:
    return [(None, r, f"line {i + 1}") for i, r in enumerate(resources)]


def _outcome(build: Callable[[], Chart]) -> Any:
    """The chart's entries, or the error it raised."""
    try:
        return _shape(build())
    except ChartError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize(
    "resources",
    [
        # a left-out resource read twice: the same, then different (key order aside)
        [
            PATIENT,
            {"resourceType": "Observation", "id": "o", "code": VITAL, "subject": SUBJECT},
            {"resourceType": "Observation", "id": "o", "subject": SUBJECT, "code": VITAL},
        ],
        [
            PATIENT,
            {"resourceType": "Observation", "id": "o", "code": VITAL, "subject": SUBJECT},
            {"resourceType": "Observation", "id": "o", "status": "final", "subject": SUBJECT},
        ],
        # a left-out resource about another patient
        [
            PATIENT,
            {
                "resourceType": "Observation",
                "id": "o",
                "subject": SUBJECT,
                "patient": {"reference": "Patient/q"},
            },
        ],
        # an error before a second one: the first is raised
        [
            {"resourceType": "Observation", "subject": SUBJECT},
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]},
        ],
        [
            PATIENT,
            {"resourceType": "MedicationRequest", "id": "m", "subject": SUBJECT},
            {"resourceType": "Patient", "id": "p", "gender": "other"},
        ],
    ],
)
def test_a_streamed_chart_reads_twice_read_resources_and_errors_as_from_items(
    pack: Pack, resources: list[dict[str, Any]]
) -> None:
    keep = coded_in(pack.valuesets.values())
    items = _items(*resources)
    for raw in (True, False):
        streamed = _outcome(lambda raw=raw: _streamed(items, keep, raw))  # type: ignore[misc]
        assert streamed == _outcome(lambda: Chart.from_items(items, keep=keep))


def test_the_same_left_out_resource_twice_is_read_once(pack: Pack) -> None:
    keep = coded_in(pack.valuesets.values())
    vital = {"resourceType": "Observation", "id": "o", "code": VITAL, "subject": SUBJECT}
    items = _items(PATIENT, vital, dict(vital))
    assert _shape(_streamed(items, keep)) == _shape(Chart.from_items(items, keep=keep))
    assert len(_streamed(items, keep)) == 1


def test_another_patient_is_a_multiple_patients_error(pack: Pack) -> None:
    items = _items(PATIENT, {"resourceType": "Patient", "id": "q"})
    with pytest.raises(MultiplePatientsError):
        _streamed(items, coded_in(pack.valuesets.values()))


class _NoPlan:
    """A plan that knows nothing: every selector is looked at."""

    candidates: dict[int, Any] = {}
    reasons: dict[int, bool] = {}
    never: frozenset[int] = frozenset()
    never_facts: frozenset[str] = frozenset()


def _facts(chart: Chart, pack: Pack) -> dict[str, Any]:
    encounter = select_encounter(chart, pack.document.current_encounter, None)
    ctx = FactContext(chart, NOW, pack, encounter)
    return {name: ctx.fact(name) for name in pack.facts}


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_the_plan_changes_no_evaluation(
    pack: Pack, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every scenario's facts and evaluation are what they are with every selector looked
    at (the plan's never-true expressions are false; its candidates, the members)."""
    planned = _facts(scenario_chart(name), pack), evaluate(scenario_chart(name), NOW, pack)
    monkeypatch.setattr(facts, "fact_plan", lambda chart, pack: _NoPlan())
    unplanned = _facts(scenario_chart(name), pack), evaluate(scenario_chart(name), NOW, pack)
    assert planned[0] == unplanned[0]
    assert planned[1].to_json() == unplanned[1].to_json()


def test_a_chart_and_its_plan_are_freed_without_the_cyclic_collector(pack: Pack) -> None:
    """The backtest runs with the cyclic garbage collector off: a chart evaluated at a
    time must be freed by reference counting alone."""
    chart = scenario_chart(SCENARIO_NAMES[0])
    evaluate(chart.as_of(NOW), NOW, pack)
    gone = weakref.ref(chart)
    was = gc.isenabled()
    gc.disable()
    try:
        del chart
        assert gone() is None
    finally:
        if was:
            gc.enable()


def test_a_chart_no_rule_can_fire_on_replays_as_evaluated(
    pack: Pack, monkeypatch: pytest.MonkeyPatch, synthea_groups: list[list[ChartItem]]
) -> None:
    """A visit of a chart on which no rule can fire (history._silent) is not evaluated at
    each moment: its timeline is what evaluating every moment gives."""
    rule = pack.document.current_encounter
    silent = 0
    for group in synthea_groups:
        chart = Chart.from_items(group)
        visits, _ = ed_visits(chart, rule, [pack])
        fast = replay(chart, [pack], visits)
        silent += sum(history._silent(chart, visit, [pack]) for visit in visits)
        with monkeypatch.context() as patched:
            patched.setattr(history, "_silent", lambda *args: False)
            assert replay(chart, [pack], visits) == fast
    assert silent


ED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}


@pytest.mark.parametrize(
    "encounter",
    [
        {"diagnosis": 5},  # evaluate cannot list it
        {"period": {"start": "0001-01-01T00:00:00Z", "end": "0001-01-01T05:00:00Z"}},
    ],
)
def test_a_visit_evaluate_cannot_read_fails_as_evaluated(
    pack: Pack, encounter: dict[str, Any]
) -> None:
    visit = {
        "resourceType": "Encounter",
        "id": "e",
        "status": "finished",
        "class": ED,
        "subject": SUBJECT,
        "period": {"start": "2020-01-01T00:00:00Z", "end": "2020-01-01T05:00:00Z"},
        **encounter,
    }
    chart = Chart.from_resources([PATIENT, visit])
    assert fact_plan(chart, pack).silent
    visits, _ = ed_visits(chart, pack.document.current_encounter, [pack])
    with pytest.raises((TypeError, OverflowError)):
        replay(chart, [pack], visits)


def test_a_chart_entry_made_by_its_own_init_is_the_frozen_dataclass_it_was() -> None:
    """ChartEntry sets its slots itself (faster than a frozen dataclass's init): each
    field in its place, still frozen, equal, copied and pickled as a dataclass is."""
    import dataclasses
    import pickle
    from datetime import UTC, datetime

    from smartapp.engine.chart_types import ChartEntry

    time = datetime(2026, 1, 1, tzinfo=UTC)
    entry = ChartEntry("Condition/c", {"resourceType": "Condition"}, (("s", "c"),), time, "E/1")
    values = ("Condition/c", {"resourceType": "Condition"}, (("s", "c"),), time, "E/1")
    assert tuple(getattr(entry, f.name) for f in dataclasses.fields(entry)) == values
    assert entry == ChartEntry(*values) and pickle.loads(pickle.dumps(entry)) == entry
    assert dataclasses.replace(entry, encounter=None).encounter is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.key = "Condition/other"  # type: ignore[misc]
