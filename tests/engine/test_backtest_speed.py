"""The backtest's speed work changes no report: golden reports, pinned before it.

Each golden file (``tests/engine/data/backtest_golden/``) holds the ``--json`` report
(without the paths and the worker count, which depend on the run) and every pack's whole
timeline (each moment at which an outcome changed, with all evidence and withheld
reasons) of a folder replayed with the default pack and a compared pack: the Synthea
folder, the public scenarios and the small charts of ``test_backtest``. Two compared packs
move what the replay's shortcuts rest on: the COWS threshold (a value) and the look-backs
and windows (time, so a moment skipped as "nothing new" would show).

Regenerate (only after a deliberate change of what the backtest reports) with
``HANDOFF_REGEN_GOLDEN=1 python -m pytest tests/engine/test_backtest_speed.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from smartapp.engine import Chart, ChartError, Pack, load_pack
from smartapp.engine.chart import MultiplePatientsError, coded_in, resource_items
from smartapp.engine.history import Replayed
from smartapp.rulestools.backtest import Backtest, BacktestError, report, run_backtest
from smartapp.rulestools.backtest_pool import WorkerFailed, run_forked

from .helpers import ICD, RULES, SCENARIOS, SYNTHEA, run_free
from .test_backtest import write_bundles, write_ndjson

GOLDEN = Path(__file__).parent / "data" / "backtest_golden"
REGENERATE = os.environ.get("HANDOFF_REGEN_GOLDEN") == "1"

#: Parameter changes of each compared pack (text replaced in rules/packs/default.yaml).
VARIANTS: dict[str, dict[str, str]] = {
    "cows12": {"  cows_threshold: 8\n": "  cows_threshold: 12\n"},
    "windows": {
        "  cows_lookback: 12h\n": "  cows_lookback: 2h\n",
        "  naloxone_lookback: 365d\n": "  naloxone_lookback: 30d\n",
        "  recent_overdose_lookback: 365d\n": "  recent_overdose_lookback: 90d\n",
        "  recent_methadone_lookback: 7d\n": "  recent_methadone_lookback: 2d\n",
        "  dispense_default_supply: 30d\n": "  dispense_default_supply: 3d\n",
        "  extended_release_lookback: 35d\n": "  extended_release_lookback: 10d\n",
        "  prehospital_window: 6h\n": "  prehospital_window: 1h\n",
        "  condition_history: 24h\n": "  condition_history: 2h\n",
    },
}


def variant_pack(tmp_path: Path, name: str) -> Pack:
    """The default pack with one variant's parameters, beside the default value sets."""
    text = (RULES / "packs" / "default.yaml").read_text()
    for old, new in VARIANTS[name].items():
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("version: 2.0.0", f"version: 2.0.0-{name}")
    path = tmp_path / name / "packs" / f"{name}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return load_pack(path, RULES / "valuesets")


def _timeline(replayed: Replayed) -> dict[str, Any]:
    return {
        "visit": replayed.visit.key,
        "patient": replayed.patient,
        "moments": [m.isoformat() for m in replayed.visit.moments],
        "timelines": [
            [
                {
                    "time": moment.time.isoformat(),
                    "suggested": [s.to_json() for s in moment.outcome.suggested],
                    "withheld": [[k, list(r)] for k, r in moment.outcome.withheld],
                }
                for moment in timeline
            ]
            for timeline in replayed.timelines
        ],
    }


def snapshot(result: Backtest, root: Path) -> dict[str, Any]:
    """The report without what depends on the run (paths, workers), and every timeline."""
    data = run_free(report(result))
    for skipped in data["input"]["skipped_files"]:
        skipped["path"] = str(Path(skipped["path"]).relative_to(root))
    for name in ("pack", "compare"):
        data[name].pop("path")
    data["timelines"] = [_timeline(r) for r in result.visits]
    return json.loads(json.dumps(data))  # tuples as lists, as read back from the file


def _check(name: str, result: Backtest, root: Path) -> None:
    found = snapshot(result, root)
    path = GOLDEN / f"{name}.json"
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    assert found["visits"] == expected["visits"]
    for visit, (a, b) in enumerate(zip(found["timelines"], expected["timelines"], strict=True)):
        assert a == b, f"visit {visit}: {a['visit']}"
    assert found == expected


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_synthea_report_unchanged(tmp_path: Path, pack: Pack, variant: str) -> None:
    """Synthea (227 visits, 457 moments), with two workers, as the benchmark runs it."""
    result = run_backtest(SYNTHEA, [pack, variant_pack(tmp_path, variant)], workers=2)
    assert len(result.visits) == 227
    assert sum(len(r.visit.moments) for r in result.visits) == 457
    _check(f"synthea-{variant}", result, SYNTHEA)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_scenarios_report_unchanged(tmp_path: Path, pack: Pack, variant: str) -> None:
    """The public scenarios, in one process."""
    result = run_backtest(SCENARIOS, [pack, variant_pack(tmp_path, variant)], workers=1)
    _check(f"scenarios-{variant}", result, SCENARIOS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_small_charts_report_unchanged(tmp_path: Path, pack: Pack, variant: str) -> None:
    """The hand-written charts of test_backtest, as bundles and as NDJSON (one report)."""
    other = variant_pack(tmp_path, variant)
    bundles = write_bundles(tmp_path / "bundles")
    _check(f"small-{variant}", run_backtest(bundles, [pack, other], workers=1), bundles)
    ndjson = write_ndjson(tmp_path / "ndjson")
    found = snapshot(run_backtest(ndjson, [pack, other], workers=1), ndjson)
    expected = json.loads((GOLDEN / f"small-{variant}.json").read_text())
    for data in (found, expected):
        data.pop("input")
        data.pop("patients")  # NDJSON groups by patient; the bundles hold one patient-less
    assert found == expected


# ---------------------------------------------------------------------------------------
# what the speed rests on


def _claim(cid: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "id": cid,
        "patient": {"reference": f"Patient/{patient}"},
        "type": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
    }


def test_chart_keeping_only_what_rules_read(pack: Pack) -> None:
    """``keep``: the patient, encounters, medications and resources coded in the pack's
    value sets are held (and answer as in the full chart); the rest is checked, not held."""
    patient = {"resourceType": "Patient", "id": "p"}
    enc = {"resourceType": "Encounter", "id": "e", "subject": {"reference": "Patient/p"}}
    od = {
        "resourceType": "Condition",
        "id": "od",
        "code": {"coding": [{"system": ICD, "code": "T40.1X1A"}]},
        "subject": {"reference": "Patient/p"},
        "encounter": {"reference": "Encounter/e"},
    }
    vitals = {
        "resourceType": "Observation",
        "id": "hr",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p"},
    }
    resources = [patient, enc, od, vitals, _claim("c", "p")]
    keep = coded_in(pack.valuesets.values())
    full = Chart.from_resources(resources)
    lean = Chart.from_items(resource_items(resources), keep=keep)
    assert [e.key for e in lean.of_all()] == ["Patient/p", "Encounter/e", "Condition/od"]
    assert lean.resolve("Observation/hr") is None and full.resolve("Observation/hr")
    for valueset in pack.valuesets.values():
        assert lean.members(valueset) == full.members(valueset)
    # checked all the same: a Claim about another patient, a conflicting duplicate
    with pytest.raises(MultiplePatientsError):
        Chart.from_items(resource_items([*resources, _claim("c2", "q")]), keep=keep)
    changed = {**vitals, "status": "final"}
    with pytest.raises(ChartError, match="appears twice"):
        Chart.from_items(resource_items([*resources, changed]), keep=keep)


def _fails(task: int) -> int:
    if task == 3:
        raise BacktestError(f"task {task}: broken")
    return task


def _dies(task: int) -> int:
    if task == 3:
        os._exit(1)  # a worker killed mid-run
    return task


def test_forked_workers_run_every_task_and_raise_what_a_task_raised() -> None:
    seen: list[int] = []
    assert sorted(run_forked(list(range(20)), abs, 2, seen.append)) == list(range(20))
    assert seen == [1] * 20
    with pytest.raises(BacktestError, match="task 3: broken"):
        run_forked(list(range(8)), _fails, 2)
    with pytest.raises(WorkerFailed, match="tasks lost"):
        run_forked(list(range(8)), _dies, 2)
