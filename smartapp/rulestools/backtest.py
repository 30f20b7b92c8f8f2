"""``handoff rules backtest``: replay every past ED visit of a folder of charts.

Reads FHIR Bundles (``*.json``: transaction, collection... one or more patients each) and
bulk-export NDJSON (``*.ndjson``: one resource per line, resources of many patients,
grouped by their ``subject``/``patient`` reference), replays each ED visit at its own
time with the pure engine (``smartapp.engine.history``), on a pool of worker processes,
and sums the results. The report's shapes are documented in ``rules/README.md``.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from smartapp.engine import Chart, ChartError, Pack
from smartapp.engine.chart import ChartItem, MultiplePatientsError, bundle_items, resource_items
from smartapp.engine.history import (
    Moment,
    Outcome,
    Replayed,
    difference,
    ed_visits,
    first_difference,
    first_suggested,
    replay,
    split_by_patient,
)

BUNDLE_SUFFIXES = (".json",)
NDJSON_SUFFIXES = (".ndjson",)


class BacktestError(Exception):
    """The input cannot be read: the message names the file and what is wrong."""


@dataclass
class PatientOutcome:
    """What one task (a bundle file, or an NDJSON patient) found."""

    patients: int = 0
    visits: list[Replayed] = field(default_factory=list)
    skipped: int = 0
    source: str = ""  # the file (or NDJSON patient) it read: orders ties in the report
    not_fhir: str | None = None  # why a bundle file was skipped (it is not FHIR at all)


# ---------------------------------------------------------------------------------------
# finding and reading input


def find_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    """Bundle files and NDJSON files under ``path`` (a folder, searched recursively, or
    one file), sorted by name. BacktestError when there is nothing readable."""
    if not path.exists():
        raise BacktestError(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise BacktestError(f"{path}: permission denied")
    if path.is_file():
        files = [path]
    elif path.is_dir():
        try:
            files = sorted(p for p in path.rglob("*") if p.is_file())
        except OSError as exc:
            raise BacktestError(f"{path}: cannot list the folder: {exc.strerror}") from exc
    else:
        raise BacktestError(f"{path}: not a file or folder")
    bundles = [p for p in files if p.name.lower().endswith(BUNDLE_SUFFIXES)]
    ndjson = [p for p in files if p.name.lower().endswith(NDJSON_SUFFIXES)]
    if not bundles and not ndjson:
        raise BacktestError(f"{path}: no FHIR bundles (*.json) or NDJSON files (*.ndjson)")
    return bundles, ndjson


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BacktestError(f"{path}: cannot read: {exc.strerror}") from exc


class NotFhirError(Exception):
    """A ``*.json`` file that holds no FHIR at all (``expected.json``, a config file)."""


def not_fhir_reason(data: object) -> str | None:
    """Why parsed JSON is not FHIR content at all, or None when it is (or claims to be).

    Only files with no ``resourceType`` anywhere at the top are skipped: a Patient, a
    Bundle of an unread type or a list with one bad resource is FHIR and stays an error.
    """
    if isinstance(data, dict):
        return None if "resourceType" in data else "not FHIR: a JSON object without resourceType"
    if isinstance(data, list):
        if not data:
            return "not FHIR: an empty list"
        if not any(isinstance(item, dict) and "resourceType" in item for item in data):
            return "not FHIR: a list without resources"
        return None
    return f"not FHIR: a JSON {type(data).__name__}"


def read_bundle_file(path: Path) -> list[ChartItem]:
    """The resources of a JSON file holding a Bundle or a list of resources.

    Raises NotFhirError for a file that is not FHIR, BacktestError for malformed FHIR."""
    try:
        data = orjson.loads(_read_bytes(path))
    except orjson.JSONDecodeError as exc:
        raise BacktestError(f"{path}: not valid JSON: {exc}") from exc
    reason = not_fhir_reason(data)
    if reason:
        raise NotFhirError(reason)
    try:
        return resource_items(data) if isinstance(data, list) else bundle_items(data)
    except ChartError as exc:
        raise BacktestError(f"{path}: {exc}") from exc


def read_ndjson_files(paths: Iterable[Path]) -> list[ChartItem]:
    """The resources of NDJSON files, one per line (blank lines are ignored)."""
    items: list[ChartItem] = []
    for path in paths:
        data = _read_bytes(path)
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BacktestError(f"{where}: not valid JSON: {exc}") from exc
            if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
                raise BacktestError(f"{where}: a Bundle (NDJSON holds one resource a line)")
            try:
                resource_items([resource])
            except ChartError as exc:
                message = str(exc).removeprefix("resources[0]: ")
                raise BacktestError(f"{where}: {message}") from exc
            items.append((None, resource, where))
    return items


def charts_of(items: list[ChartItem], source: str) -> Iterator[Chart]:
    """One chart per patient: the whole file when it is one patient's, else split."""
    try:
        try:
            yield Chart.from_items(items)
            return
        except MultiplePatientsError:
            pass
        for group in split_by_patient(items).values():
            yield Chart.from_items(group)
    except ChartError as exc:
        raise BacktestError(f"{source}: {exc}") from exc


# ---------------------------------------------------------------------------------------
# the work, in a worker or in-process


_PACKS: list[Pack] = []
_GROUPS: list[list[ChartItem]] = []


def _init_worker(packs: list[Pack] | None, groups: list[list[ChartItem]] | None) -> None:
    """Pool initializer: with ``fork`` the globals are inherited and nothing is passed."""
    if packs is not None:
        _PACKS[:] = packs
    if groups is not None:
        _GROUPS[:] = groups


@contextmanager
def _no_gc() -> Iterator[None]:
    """Parsed FHIR JSON is acyclic: reference counting frees it, and the cyclic garbage
    collector would only rescan millions of live objects (it costs more than parsing)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _replay_charts(charts: Iterable[Chart], packs: Sequence[Pack]) -> PatientOutcome:
    out = PatientOutcome()
    rule = packs[0].document.current_encounter
    for chart in charts:
        out.patients += 1
        visits, skipped = ed_visits(chart, rule, packs)
        out.skipped += len(skipped)
        out.visits.extend(replay(chart, packs, visits))
    return out


def _task(task: tuple[str, Any]) -> PatientOutcome:
    """One unit of work: ``("bundle", path)`` or ``("group", index into _GROUPS)``."""
    kind, arg = task
    with _no_gc():
        if kind == "bundle":
            path = Path(arg)
            try:
                items = read_bundle_file(path)
            except NotFhirError as exc:
                return PatientOutcome(source=str(path), not_fhir=str(exc))
            out = _replay_charts(charts_of(items, str(path)), _PACKS)
            out.source = str(path)
            return out
        group = _GROUPS[arg] if isinstance(arg, int) else arg
        source = _group_source(group)
        out = _replay_charts(charts_of(group, source), _PACKS)
        out.source = source
        return out


def _group_source(group: list[ChartItem]) -> str:
    """How an error names an NDJSON patient: its Patient line, else its first line."""
    for _url, resource, where in group:
        if resource["resourceType"] == "Patient":
            return f"{where} (Patient/{resource.get('id')})"
    return group[0][2] if group else "NDJSON"


# ---------------------------------------------------------------------------------------
# the run


@dataclass
class Backtest:
    """Everything a backtest found; :func:`report` turns it into the JSON report."""

    path: Path
    packs: list[Pack]
    bundle_files: int
    ndjson_files: int
    workers: int
    patients: int
    skipped: int
    visits: list[Replayed]
    # ``*.json`` files that are not FHIR (path, why), left out and listed in the report
    skipped_files: list[tuple[str, str]] = field(default_factory=list)


def run_backtest(
    path: Path,
    packs: Sequence[Pack],
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_tasks: Callable[[int], None] | None = None,
) -> Backtest:
    """Replay every ED visit under ``path`` with each pack (the first is the base).

    ``workers``: processes (default: every core; 1 runs in this process). ``on_tasks``
    is told the number of tasks, then ``progress`` is called with 1 as each one ends.
    Raises BacktestError naming the file on unreadable or malformed input.
    """
    packs = list(packs)
    bundles, ndjson = find_inputs(path)
    tasks: list[tuple[str, Any]] = []
    # largest first, so one big chart does not finish alone at the end
    sizes = {p: p.stat().st_size for p in bundles}
    tasks.extend(("bundle", str(p)) for p in sorted(bundles, key=lambda p: -sizes[p]))
    groups: list[list[ChartItem]] = []
    if ndjson:
        with _no_gc():
            groups = list(split_by_patient(read_ndjson_files(ndjson)).values())
        tasks.extend(("group", i) for i in range(len(groups)))
    if on_tasks:
        on_tasks(len(tasks))
    wanted = workers if workers is not None else (os.cpu_count() or 1)
    used = max(1, min(wanted, len(tasks)))
    outcomes: list[PatientOutcome] = []
    try:
        if used == 1:
            _init_worker(packs, groups)
            for task in tasks:
                outcomes.append(_task(task))
                if progress:
                    progress(1)
        else:
            outcomes = _run_pool(tasks, packs, groups, used, progress)
    finally:
        _init_worker([], [])  # let the NDJSON resources go
    outcomes.sort(key=lambda o: o.source)  # workers finish in any order
    skipped_files = [(o.source, o.not_fhir) for o in outcomes if o.not_fhir]
    if len(skipped_files) == len(bundles) and not ndjson:
        names = "; ".join(f"skipped {name} ({why})" for name, why in skipped_files)
        raise BacktestError(f"{path}: no FHIR bundles (*.json) or NDJSON files: {names}")
    visits = [v for o in outcomes for v in o.visits]
    visits.sort(key=lambda r: (r.visit.time, r.patient or "", r.visit.key))
    return Backtest(
        path=path,
        packs=packs,
        bundle_files=len(bundles) - len(skipped_files),
        ndjson_files=len(ndjson),
        workers=used,
        patients=sum(o.patients for o in outcomes),
        skipped=sum(o.skipped for o in outcomes),
        visits=visits,
        skipped_files=skipped_files,
    )


def _run_pool(
    tasks: list[tuple[str, Any]],
    packs: list[Pack],
    groups: list[list[ChartItem]],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[PatientOutcome]:
    """Run tasks on a process pool; forked workers inherit packs and NDJSON groups."""
    methods = multiprocessing.get_all_start_methods()
    fork = "fork" in methods and sys.platform != "darwin"
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    if fork:
        _init_worker(packs, groups)
        initargs: tuple[Any, Any] = (None, None)
    else:
        initargs = (packs, None)
        tasks = [(k, groups[a]) if k == "group" else (k, a) for k, a in tasks]
    outcomes = []
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        for outcome in pool.imap_unordered(_task, tasks, chunksize=1):
            outcomes.append(outcome)
            if progress:
                progress(1)
    return outcomes


# ---------------------------------------------------------------------------------------
# the report


def _kind_counts(pack: Pack) -> dict[str, dict[str, Any]]:
    """Zeroed counts for every kind of a pack, with its declared variants and cautions."""
    return {
        rule.kind: {
            "visits": 0,
            "variants": {v.name: 0 for v in rule.variants or ()},
            "cautions": {name: 0 for name in rule.cautions},
        }
        for rule in pack.rules
    }


def _add(counts: dict[str, dict[str, Any]], suggestions: Iterable[Any]) -> None:
    for s in suggestions:
        kind = counts.setdefault(s.kind, {"visits": 0, "variants": {}, "cautions": {}})
        kind["visits"] += 1
        if s.variant is not None:
            kind["variants"][s.variant] = kind["variants"].get(s.variant, 0) + 1
        for caution in s.cautions:
            kind["cautions"][caution] = kind["cautions"].get(caution, 0) + 1


def _during_counts(pack: Pack, timelines: Iterable[Sequence[Moment]]) -> dict[str, Any]:
    """Visits with each kind suggested at any moment of the visit (with every variant and
    caution it had at some moment)."""
    counts = _kind_counts(pack)
    with_any = 0
    for timeline in timelines:
        seen: dict[str, Any] = {}
        for moment in timeline:
            for s in moment.outcome.suggested:
                variants, cautions = seen.setdefault(s.kind, (set(), set()))
                if s.variant is not None:
                    variants.add(s.variant)
                cautions.update(s.cautions)
        with_any += bool(seen)
        for kind, (variants, cautions) in seen.items():
            found = counts.setdefault(kind, {"visits": 0, "variants": {}, "cautions": {}})
            found["visits"] += 1
            for name in variants:
                found["variants"][name] = found["variants"].get(name, 0) + 1
            for name in cautions:
                found["cautions"][name] = found["cautions"].get(name, 0) + 1
    return {"visits_with_suggestions": with_any, "counts": counts}


def pack_report(result: Backtest, index: int) -> dict[str, Any]:
    """Counts of one pack at the replay time (overall and by year), and during the visits."""
    pack = result.packs[index]
    overall = _kind_counts(pack)
    by_year: dict[str, dict[str, Any]] = {}
    with_any = 0
    for replayed in result.visits:
        found = replayed.results[index]
        year = by_year.setdefault(
            str(replayed.visit.time.year),
            {"visits_with_suggestions": 0, "counts": _kind_counts(pack)},
        )
        _add(overall, found)
        _add(year["counts"], found)
        if found:
            with_any += 1
            year["visits_with_suggestions"] += 1
    return {
        "id": pack.id,
        "version": pack.version,
        "hash": f"sha256:{pack.content_hash}",
        "path": str(pack.path) if pack.path else None,
        "visits_with_suggestions": with_any,
        "counts": overall,
        "by_year": dict(sorted(by_year.items())),
        "during": _during_counts(pack, (r.timelines[index] for r in result.visits)),
    }


def differences(result: Backtest) -> list[dict[str, Any]]:
    """Visits where the compared pack's outcome (suggestions, variants, cautions, evidence
    or withheld reasons) differs from the base pack's at some moment, with the first such
    moment and the difference then."""
    out = []
    for replayed in result.visits:
        found = first_difference(replayed.timelines[0], replayed.timelines[1])
        if found is None:
            continue
        moment, before, after = found
        diff = difference(before.suggested, after.suggested)
        out.append(
            {
                "visit": replayed.visit.id,
                "patient": replayed.patient,
                "time": replayed.visit.time.isoformat(),
                "moment": moment.isoformat(),
                "added": [s.to_json() for s in diff.added],
                "removed": [s.to_json() for s in diff.removed],
                "changed": [
                    {"kind": a.kind, "before": a.to_json(), "after": b.to_json()}
                    for a, b in diff.changed
                ],
                "withheld": withheld_difference(before, after),
            }
        )
    return out


def withheld_difference(before: Outcome, after: Outcome) -> list[dict[str, Any]]:
    """Kinds whose withheld reasons differ: ``{"kind", "before", "after"}`` (reason lists,
    empty when the kind is not withheld)."""
    a, b = dict(before.withheld), dict(after.withheld)
    kinds = list(dict.fromkeys([*a, *b]))
    return [
        {"kind": k, "before": list(a.get(k, ())), "after": list(b.get(k, ()))}
        for k in kinds
        if a.get(k, ()) != b.get(k, ())
    ]


def per_visit(result: Backtest) -> list[dict[str, Any]]:
    """Each visit: its moments, and for each pack every kind suggested at some moment with
    the first moment it was, and the withheld kinds with their reasons at the replay time."""
    out = []
    for replayed in result.visits:
        visit = replayed.visit
        packs = []
        for timeline in replayed.timelines:
            first = first_suggested(timeline)
            packs.append(
                {
                    "first_suggested": {k: t.isoformat() for k, t in first.items()},
                    "at_replay_time": [s.kind for s in timeline[-1].outcome.suggested],
                    "withheld": {k: list(r) for k, r in timeline[-1].outcome.withheld},
                }
            )
        out.append(
            {
                "visit": visit.id,
                "patient": replayed.patient,
                "start": visit.start.isoformat() if visit.start else None,
                "time": visit.time.isoformat(),
                "moments": len(visit.moments) or 1,
                "packs": packs,
            }
        )
    return out


def report(result: Backtest) -> dict[str, Any]:
    """The ``--json`` report (documented in rules/README.md)."""
    years = Counter(str(r.visit.time.year) for r in result.visits)
    out: dict[str, Any] = {
        "input": {
            "path": str(result.path),
            "bundle_files": result.bundle_files,
            "ndjson_files": result.ndjson_files,
            "skipped_files": [{"path": p, "reason": why} for p, why in result.skipped_files],
        },
        "workers": result.workers,
        "patients": result.patients,
        "patients_with_visits": len({r.patient for r in result.visits}),
        "visits": len(result.visits),
        "visits_skipped": result.skipped,
        "visits_by_year": dict(sorted(years.items())),
        "pack": pack_report(result, 0),
        "compare": None,
        "per_visit": per_visit(result),
    }
    if len(result.packs) > 1:
        out["compare"] = {**pack_report(result, 1), "differences": differences(result)}
    return out


def _variant_label(kind: str, variant: str | None) -> str:
    return f"{kind} [{variant}]" if variant else kind


def _skipped_lines(skipped: list[dict[str, str]]) -> list[str]:
    """What the text report says about files left out because they are not FHIR."""
    if not skipped:
        return []
    head = "1 file" if len(skipped) == 1 else f"{len(skipped)} files"
    if len(skipped) == 1:
        return [f"skipped {head} that is not FHIR: {skipped[0]['path']} ({_why(skipped[0])})"]
    return [f"skipped {head} that are not FHIR:"] + [f"  {s['path']} ({_why(s)})" for s in skipped]


def _why(skipped: dict[str, str]) -> str:
    return skipped["reason"].removeprefix("not FHIR: ")


def render_text(data: dict[str, Any], seconds: float | None = None) -> str:
    """A readable rendering of :func:`report`'s output."""
    base, other = data["pack"], data["compare"]
    inp = data["input"]
    files = ", ".join(
        f"{n} {what}"
        for what, n in (
            ("bundle files", inp["bundle_files"]),
            ("NDJSON files", inp["ndjson_files"]),
        )
        if n
    )
    took = f" in {seconds:.2f} s" if seconds is not None else ""
    lines = [
        f"backtest of {inp['path']} ({files}), {data['workers']} worker(s){took}",
        *_skipped_lines(inp.get("skipped_files", [])),
        f"pack     {base['id']} {base['version']} ({base['hash'][:19]})",
    ]
    if other:
        lines.append(f"compare  {other['id']} {other['version']} ({other['hash'][:19]})")
    lines += [
        f"patients {data['patients']} read, {data['patients_with_visits']} with ED visits",
        f"visits   {data['visits']} ED visits replayed"
        + (f", {data['visits_skipped']} skipped (no time)" if data["visits_skipped"] else ""),
        "",
    ]
    packs = [base] + ([other] if other else [])
    header = f"{'suggestion':<44}" + "".join(f"{p['id'][:22]:>24}" for p in packs)
    lines.append(header)
    lines.append(f"{'':<44}" + "".join(f"{p['version'][:22]:>24}" for p in packs))
    lines.append("-" * len(header))
    lines.append(
        f"{'visits with any suggestion':<44}"
        + "".join(f"{p['visits_with_suggestions']:>24}" for p in packs)
    )
    kinds = list(base["counts"]) + [
        k for k in (other or {}).get("counts", {}) if k not in base["counts"]
    ]
    for kind in kinds:
        cells = [
            p["counts"].get(kind, {"visits": 0, "variants": {}, "cautions": {}}) for p in packs
        ]
        lines.append(f"{kind:<44}" + "".join(f"{c['visits']:>24}" for c in cells))
        for part in ("variants", "cautions"):
            names = list(dict.fromkeys(n for c in cells for n in c[part]))
            for name in names:
                label = f"  {'variant' if part == 'variants' else 'caution'} {name}"
                lines.append(f"{label:<44}" + "".join(f"{c[part].get(name, 0):>24}" for c in cells))
    lines += ["", "suggested at any moment of the visit (arrival, each change, discharge):"]
    lines.append(
        f"{'visits with any suggestion':<44}"
        + "".join(f"{p['during']['visits_with_suggestions']:>24}" for p in packs)
    )
    for kind in kinds:
        cells = [p["during"]["counts"].get(kind, {"visits": 0}) for p in packs]
        lines.append(f"{kind:<44}" + "".join(f"{c['visits']:>24}" for c in cells))
    earlier = _suggested_before_discharge(data.get("per_visit", []))
    if earlier:
        lines += ["", f"{len(earlier)} visit(s) where a kind was suggested during the visit "
                  f"but not at discharge ({base['id']}):"]
        lines += [f"  {line}" for line in earlier[:20]]
        if len(earlier) > 20:
            lines.append(f"  ... and {len(earlier) - 20} more (see --json per_visit)")
    lines += ["", f"by year (replay time): ED visits, then suggestions ({base['id']})"]
    for year, visits in data["visits_by_year"].items():
        counts = base["by_year"].get(year, {}).get("counts", {})
        parts = []
        for kind, c in counts.items():
            if not c["visits"]:
                continue
            variants = [f"{v} {n}" for v, n in c["variants"].items() if n]
            parts.append(
                f"{kind} {c['visits']}" + (f" ({', '.join(variants)})" if variants else "")
            )
        lines.append(f"  {year}  {visits:>4} visits   " + ("; ".join(parts) or "-"))
    if other is not None:
        diffs = other["differences"]
        lines += [
            "",
            f"{len(diffs)} visit(s) with different suggestions "
            f"({base['id']} {base['version']} -> {other['id']} {other['version']}):",
        ]
        for d in diffs:
            lines.append(
                f"  visit {d['visit']}  patient {d['patient']}  {d['time']}"
                + (f"  (first differs at {d['moment']})" if d.get("moment") else "")
            )
            for s in d["added"]:
                lines.append(
                    f"    + {_variant_label(s['kind'], s['variant'])}"
                    + (f" cautions {s['cautions']}" if s["cautions"] else "")
                )
            for s in d["removed"]:
                lines.append(f"    - {_variant_label(s['kind'], s['variant'])}")
            for c in d["changed"]:
                a, b = c["before"], c["after"]
                for part in ("variant", "cautions", "evidence"):
                    if a[part] != b[part]:
                        lines.append(f"    ~ {c['kind']}: {part} {a[part]} -> {b[part]}")
            for w in d.get("withheld", []):
                lines.append(f"    ! {w['kind']} withheld: {w['before']} -> {w['after']}")
    return "\n".join(lines)


def _suggested_before_discharge(visits: list[dict[str, Any]]) -> list[str]:
    """Lines for visits where the base pack suggested a kind at some moment but not at
    the replay time (it was shown during the visit, then no longer)."""
    out = []
    for v in visits:
        base = v["packs"][0]
        gone = [k for k in base["first_suggested"] if k not in base["at_replay_time"]]
        for kind in gone:
            out.append(
                f"visit {v['visit']}  patient {v['patient']}  {kind} from "
                f"{base['first_suggested'][kind]}, not at {v['time']}"
                + (f" (withheld: {', '.join(base['withheld'][kind])})"
                   if kind in base["withheld"] else "")
            )
    return out
