"""Rule engine and backtest speed, measured against merely parsing the same JSON (orjson).

    python benchmarks/rules.py [--synthea DIR] [--workers N] [--quick]

1. Evaluating one ED chart of about 300 resources and one of about 5,000: building the
   Chart from the parsed resources plus ``evaluate`` (the JSON parse excluded and
   measured on its own), against ``orjson.loads`` of the same chart's bytes. Both charts
   are real Synthea histories (Cary O'Hara's, 304 resources; the 5,000 are the longest
   histories merged into one patient and trimmed), each given a current, in-progress ED
   visit with an opioid overdose, naloxone given and a COWS of 10, so every rule fires.
2. ``handoff rules backtest`` over the Synthea folder (reading and parsing included, on
   ``--workers`` processes, default every core) against a single-process read and parse
   of the same files.
3. The within-visit replay alone, per visit and per moment: every ED visit evaluated at
   each moment its chart changed (arrival, each new resource the rules read, discharge),
   the charts already built, in one process.

Each figure is the best of several runs (other work shares the machine), each run cold
(value set memos cleared). The last line printed is one JSON object:
``{"eval_to_parse_300", "eval_to_parse_5000", "backtest_to_parse", "backtest_visits_per_s",
"moments_per_visit", "replay_ms_per_visit", "replay_ms_per_moment"}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartapp.engine import Chart, Pack, evaluate, load_pack  # noqa: E402
from smartapp.engine.chart import bundle_items, coded_in  # noqa: E402
from smartapp.engine.history import ed_visits, replay  # noqa: E402
from smartapp.rulestools.backtest import run_backtest  # noqa: E402

SYNTHEA = REPO.parent / "shared" / "synthea"
SMALL = "Cary_O'Hara_e39beddb-dcad-4762-a3ca-b671a92a5f2d.json"
NOW = datetime(2021, 6, 1, 14, 0, tzinfo=UTC)
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PACKS: list[Pack] = []


# ---------------------------------------------------------------------------------------
# the charts


def current_visit(patient_url: str, tag: str) -> list[dict[str, Any]]:
    """Bundle entries of an in-progress ED visit: heroin overdose, naloxone, COWS 10."""
    enc_url = f"urn:uuid:{tag}-enc"
    start = (NOW - timedelta(hours=3)).isoformat()
    subject = {"reference": patient_url}
    encounter = {"reference": enc_url}
    resources = [
        {
            "resourceType": "Encounter",
            "id": f"{tag}-enc",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "subject": subject,
            "period": {"start": start},
        },
        {
            "resourceType": "Condition",
            "id": f"{tag}-od",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "verificationStatus": {"coding": [{"code": "confirmed"}]},
            "code": {"coding": [{"system": ICD, "code": "T40.1X1A"}]},
            "subject": subject,
            "encounter": encounter,
            "onsetDateTime": start,
        },
        {
            "resourceType": "MedicationAdministration",
            "id": f"{tag}-nalox",
            "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1191222"}]},
            "subject": subject,
            "context": encounter,
            "effectiveDateTime": (NOW - timedelta(hours=2)).isoformat(),
        },
        {
            "resourceType": "Observation",
            "id": f"{tag}-cows",
            "status": "final",
            "code": {"coding": [{"system": "urn:handoff:flowsheet", "code": "cows-total"}]},
            "subject": subject,
            "encounter": encounter,
            "effectiveDateTime": (NOW - timedelta(hours=1)).isoformat(),
            "valueQuantity": {"value": 10},
        },
    ]
    return [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]


def small_chart(synthea: Path) -> tuple[bytes, str]:
    """A real 304-resource history and a current overdose visit (308 resources)."""
    bundle = orjson.loads((synthea / SMALL).read_bytes())
    patient_url = bundle["entry"][0]["fullUrl"]
    bundle["entry"] += current_visit(patient_url, "bench300")
    return orjson.dumps(bundle), "bench300-enc"


def large_chart(synthea: Path, size: int = 5000) -> tuple[bytes, str]:
    """The longest histories merged into one living patient, trimmed to ``size``."""
    files = sorted(synthea.glob("*.json"), key=lambda p: -p.stat().st_size)
    docs = ((p, orjson.loads(p.read_bytes())) for p in files)
    base, first = next(
        (p, d)
        for p, d in docs  # the longest history of a living patient
        if "deceasedDateTime" not in d["entry"][0]["resource"]
    )
    files.remove(base)
    patient_url = first["entry"][0]["fullUrl"]
    entries = list(first["entry"])
    for path in files:
        if len(entries) >= size:
            break
        raw = path.read_bytes()
        other = orjson.loads(raw)["entry"][0]
        # every reference to the other patient now names ours; drop their Patient
        merged = orjson.loads(raw.replace(other["fullUrl"].encode(), patient_url.encode()))
        entries += [e for e in merged["entry"] if e["resource"]["resourceType"] != "Patient"]
    entries = entries[: size - 4] + current_visit(patient_url, "bench5000")
    return orjson.dumps(
        {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    ), "bench5000-enc"


# ---------------------------------------------------------------------------------------
# timing


def cold() -> None:
    """Forget what earlier runs memoised (value set membership of codes), so each run
    costs what a first evaluation in a fresh process costs."""
    for pack in PACKS:
        for valueset in pack.valuesets.values():
            valueset._memo.clear()


def best_times(
    fns: dict[str, Callable[[], Any]], runs: int, collector: bool = True
) -> dict[str, float]:
    """Best wall time of each function over ``runs`` rounds. The functions take turns
    within each round, so a burst of other work on this shared machine hits what is
    compared alike, and the best run is the cost without interference. Each run is cold
    (memos cleared; a full collection before each round), with the cyclic garbage
    collector on (as Python runs by default) or off."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(runs):
        gc.collect()
        for name, fn in fns.items():
            cold()
            if not collector:
                gc.disable()
            try:
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
            finally:
                gc.enable()
    return best


def bench_chart(raw: bytes, encounter: str, pack: Pack, runs: int) -> dict[str, Any]:
    """Parse, and build + evaluate, of one chart (checking that the rules fire), with the
    garbage collector on and off: each ratio compares like with like."""
    parsed = orjson.loads(raw)
    result = evaluate(Chart.from_bundle(parsed), NOW, pack, encounter)
    kinds = {s.kind: s.variant for s in result.suggestions}
    assert kinds == {
        "prc-consult": None,
        "moud-buprenorphine": "ed-induction",
        "naloxone-kit": None,
    }, kinds
    chart = Chart.from_bundle(parsed)
    out: dict[str, Any] = {"resources": len(chart), "bytes": len(raw)}
    fns = {
        "parse": lambda: orjson.loads(raw),
        "build": lambda: Chart.from_bundle(parsed),
        "evaluate": lambda: evaluate(chart, NOW, pack, encounter),
        "build_evaluate": lambda: evaluate(Chart.from_bundle(parsed), NOW, pack, encounter),
    }
    for collector in (True, False):
        tag = "gc" if collector else "nogc"
        out[tag] = best_times(fns, runs, collector)
        out[tag]["ratio"] = out[tag]["build_evaluate"] / out[tag]["parse"]
    return out


def without_gc(fn: Callable[[], Any]) -> None:
    """Run with the cyclic garbage collector off."""
    gc.disable()
    try:
        fn()
    finally:
        gc.enable()


def parse_files(files: list[Path]) -> None:
    """Read and parse each file, one after the other, in this process."""
    for path in files:
        orjson.loads(path.read_bytes())


def bench_replay(files: list[Path], pack: Pack, runs: int) -> dict[str, float]:
    """The within-visit replay alone (charts built as the backtest builds them): its cost
    per visit and per moment, in one process."""
    keep = coded_in(pack.valuesets.values())
    gc.disable()
    try:
        charts = [
            Chart.from_items(bundle_items(orjson.loads(p.read_bytes())), keep=keep) for p in files
        ]
    finally:
        gc.enable()
    rule = pack.document.current_encounter
    found: list[Any] = []

    def run() -> None:
        found.clear()
        for chart in charts:
            visits, _skipped = ed_visits(chart, rule, [pack])
            found.extend(replay(chart, [pack], visits))

    took = best_times({"replay": run}, runs, collector=False)["replay"]
    visits = len(found)
    moments = sum(len(r.visit.moments) or 1 for r in found)
    return {
        "visits": visits,
        "moments": moments,
        "moments_per_visit": moments / visits,
        "replay_ms_per_visit": took * 1000 / visits,
        "replay_ms_per_moment": took * 1000 / moments,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthea", type=Path, default=SYNTHEA)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    pack = load_pack()
    PACKS.append(pack)
    scale = 1 if not args.quick else 5
    files = sorted(args.synthea.glob("*.json"))
    runs = max(3, 9 // scale)
    result = run_backtest(args.synthea, [pack], args.workers)  # warm up, and count
    visits = len(result.visits)
    # the backtest turns the collector off itself while it reads
    # (see smartapp/rulestools/backtest.py)
    times = best_times(
        {
            "parse_gc": lambda: parse_files(files),
            "parse_nogc": lambda: without_gc(lambda: parse_files(files)),
            "backtest": lambda: run_backtest(args.synthea, [pack], args.workers),
            "single": lambda: run_backtest(args.synthea, [pack], 1),
        },
        runs,
    )
    parse_gc, parse_nogc = times["parse_gc"], times["parse_nogc"]
    backtest, single = times["backtest"], times["single"]
    # the charts after the backtest, whose workers are forked from this process: small
    small = bench_chart(*small_chart(args.synthea), pack, runs=max(15, 150 // scale))
    large = bench_chart(*large_chart(args.synthea), pack, runs=max(5, 20 // scale))
    replayed = bench_replay(files, pack, runs)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    parse_all = min(parse_gc, parse_nogc)  # the backtest is compared with the faster parse

    def ms(x: float) -> str:
        return f"{x * 1000:8.2f} ms"

    rows: list[tuple[str, str, str, str, str]] = []
    for name, c in (("ED chart ~300", small), ("ED chart ~5000", large)):
        on, off = c["gc"], c["nogc"]
        rows.append(
            (f"{name}: {c['resources']} resources, {c['bytes'] / 1e6:.1f} MB JSON", "", "", "", "")
        )
        for label, key in (
            ("parse JSON (orjson.loads)", "parse"),
            ("build Chart", "build"),
            ("evaluate (chart built)", "evaluate"),
            ("build Chart + evaluate", "build_evaluate"),
        ):
            rows.append(
                (
                    f"  {label}",
                    ms(on[key]),
                    f"{on[key] / on['parse']:.2f}",
                    ms(off[key]),
                    f"{off[key] / off['parse']:.2f}",
                )
            )
    rows.append(
        (
            f"Synthea: {len(files)} files, {size_mb:.0f} MB, {result.patients} "
            f"patients, {visits} ED visits",
            "",
            "",
            "",
            "",
        )
    )
    rows.append(
        (
            "  read + parse every file, 1 process",
            ms(parse_gc),
            f"{parse_gc / parse_all:.2f}",
            ms(parse_nogc),
            f"{parse_nogc / parse_all:.2f}",
        )
    )
    rows.append(
        (
            f"  backtest, {result.workers} workers, parse included",
            ms(backtest),
            f"{backtest / parse_all:.2f}",
            "",
            "",
        )
    )
    rows.append(
        ("  backtest, 1 process, parse included", ms(single), f"{single / parse_all:.2f}", "", "")
    )
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'best of N runs':<{width}}{'GC on':>11}  {'x parse':>7}{'GC off':>13}  {'x parse':>7}")
    print("-" * (width + 42))
    for label, a, ra, b, rb in rows:
        print(f"{label:<{width}}{a:>11}  {ra:>7}{b:>13}  {rb:>7}")
    print(
        f"backtest x parse is against the faster parse (GC off); the backtest turns the GC "
        f"off itself. {visits / backtest:.0f} ED visits/s with {result.workers} workers, "
        f"{visits / single:.0f}/s in 1 process."
    )
    print(
        f"within-visit replay (charts built, 1 process): {replayed['moments']} moments in "
        f"{replayed['visits']} visits ({replayed['moments_per_visit']:.2f} a visit), "
        f"{replayed['replay_ms_per_visit']:.3f} ms a visit, "
        f"{replayed['replay_ms_per_moment']:.3f} ms a moment."
    )
    print(
        json.dumps(
            {
                # the worse of the two like-for-like ratios (GC on for both, GC off for both)
                "eval_to_parse_300": round(max(small["gc"]["ratio"], small["nogc"]["ratio"]), 3),
                "eval_to_parse_5000": round(max(large["gc"]["ratio"], large["nogc"]["ratio"]), 3),
                "backtest_to_parse": round(backtest / parse_all, 3),
                "backtest_visits_per_s": round(visits / backtest, 1),
                "moments_per_visit": round(replayed["moments_per_visit"], 2),
                "replay_ms_per_visit": round(replayed["replay_ms_per_visit"], 3),
                "replay_ms_per_moment": round(replayed["replay_ms_per_moment"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
