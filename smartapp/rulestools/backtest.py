"""``handoff rules backtest``: replay every past ED visit of a folder of charts.

Reads FHIR Bundles (``*.json``: transaction, collection... one or more patients each) and
bulk-export NDJSON (``*.ndjson``, ``*.ndjson.gz``: one resource per line, resources of many
patients, grouped by their ``subject``/``patient`` reference: in memory, or for a population
through an index of byte offsets by patient, see ``backtest_ndjson``), replays each ED visit
at its own time with the pure engine (``smartapp.engine.history``), on a pool of worker
processes, and sums the results. The report's shapes are documented in
``rules/README.md``. ``spark_backtest`` runs the same tasks on Apache Spark.

Input is read in ``backtest_input``, the ``--json`` report built in ``backtest_report`` and
rendered as text in ``backtest_render``; their public names are re-exported here.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from smartapp.engine import Chart, Pack
from smartapp.engine.chart import ChartError, ChartItem, KeepCodes, coded_in
from smartapp.engine.history import Replayed, ed_visits, replay, split_by_patient
from smartapp.rulestools.backtest_bucket import PatientCharts, bucket_charts
from smartapp.rulestools.backtest_files import (
    first_error,
    input_bytes,
    numbered,
    release,
    temporary_folder,
)
from smartapp.rulestools.backtest_input import (
    BUNDLE_SUFFIXES,
    NDJSON_SUFFIXES,
    BacktestError,
    NotFhirError,
    charts_of,
    find_inputs,
    not_fhir_reason,
    read_bundle_file,
    read_ndjson_files,
)
from smartapp.rulestools.backtest_ndjson import (
    EXACT,
    IN_MEMORY_BYTES,
    RUNS,
    Chunk,
    ChunkIndex,
    Misplaced,
    Population,
    run_indexing,
)
from smartapp.rulestools.backtest_pool import fork_available, run_forked
from smartapp.rulestools.backtest_render import render_text
from smartapp.rulestools.backtest_report import (
    differences,
    pack_report,
    per_visit,
    report,
    report_parts,
    report_text,
    withheld_difference,
)
from smartapp.rulestools.backtest_summary import VisitSummary, report_order, summarize

__all__ = [
    "BUNDLE_SUFFIXES",
    "NDJSON_SUFFIXES",
    "Backtest",
    "BacktestError",
    "NotFhirError",
    "OnTasks",
    "PatientOutcome",
    "charts_of",
    "collect",
    "differences",
    "find_inputs",
    "no_gc",
    "not_fhir_reason",
    "pack_report",
    "per_visit",
    "read_bundle_file",
    "read_ndjson_files",
    "render_text",
    "report",
    "report_parts",
    "report_text",
    "run_backtest",
    "withheld_difference",
]


@dataclass
class PatientOutcome:
    """What one task (a bundle file, or an NDJSON patient) found."""

    patients: int = 0
    visits: list[Replayed] = field(default_factory=list)
    summaries: list[VisitSummary] = field(default_factory=list)  # the visits, summed up
    skipped: int = 0
    source: str = ""  # the file (or NDJSON patient) it read: orders ties in the report
    not_fhir: str | None = None  # why a bundle file was skipped (it is not FHIR at all)


# ---------------------------------------------------------------------------------------
# the work, in a worker or in-process


_PACKS: list[Pack] = []
_GROUPS: list[list[ChartItem]] = []
_KEEP: list[KeepCodes] = []  # what the packs' rules can read (one memo per process)
_POP: list[Population] = []  # NDJSON indexed by bucket (a population), if it was
_SUMMARIZE: list[bool] = [False]  # a task sends its visits' summaries, not the visits


def _init_worker(
    packs: list[Pack] | None, groups: list[list[ChartItem]] | None, summarize: bool = False
) -> None:
    """Pool initializer: with ``fork`` the globals are inherited and nothing is passed."""
    _SUMMARIZE[0] = summarize
    if packs is not None:
        _PACKS[:] = packs
        _KEEP[:] = [coded_in(vs for pack in packs for vs in pack.valuesets.values())]
    if groups is not None:
        _GROUPS[:] = groups


@contextmanager
def no_gc() -> Iterator[None]:
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
    """One unit of work: ``("bundle", path)`` or ``("group", index into _GROUPS)``.

    What it read is freed before the collector is back on (in ``_work``'s frame): else the
    collector's first run would scan the whole parsed file, still alive."""
    with no_gc():
        out = _work(task)
        return summed_up(out) if _SUMMARIZE[0] else out


def summed_up(out: PatientOutcome) -> PatientOutcome:
    """``out`` with its visits replaced by their summaries (what the report needs of them,
    ``backtest_summary``): made where they were replayed, sent in their place."""
    out.summaries.extend(summarize(r) for r in out.visits)
    out.visits = []
    return out


def _work(task: tuple[str, Any]) -> PatientOutcome:
    kind, arg = task
    keep = _KEEP[0] if _KEEP else None
    if kind == "bucket":
        pop, index = (_POP[0], arg) if isinstance(arg, int) else arg
        return _replay_patients(bucket_charts(pop, index, keep))
    if kind == "bundle":
        path = Path(arg)
        try:
            items = read_bundle_file(path)
        except NotFhirError as exc:
            return PatientOutcome(source=str(path), not_fhir=str(exc))
        out = _replay_charts(charts_of(items, str(path), keep), _PACKS)
        out.source = str(path)
        return out
    group = _GROUPS[arg] if isinstance(arg, int) else arg
    source = _group_source(group)
    out = _replay_charts(charts_of(group, source, keep), _PACKS)
    out.source = source
    return out


def _replay_groups(groups: Iterable[list[ChartItem]], keep: KeepCodes | None) -> PatientOutcome:
    """Several NDJSON patients in one task (a bucket); source: the first one's."""
    out = PatientOutcome()
    for group in groups:
        source = _group_source(group)
        found = _replay_charts(charts_of(group, source, keep), _PACKS)
        out.patients += found.patients
        out.skipped += found.skipped
        out.visits.extend(found.visits)
        out.source = out.source or source
    return out


def _replay_patients(patients: Iterable[PatientCharts]) -> PatientOutcome:
    """A bucket's patients, each read into its chart (``_replay_groups`` of the bucket's
    groups); source: the first one's."""
    out = PatientOutcome()
    for patient in patients:
        found = _replay_charts(patient.charts(), _PACKS)
        out.patients += found.patients
        out.skipped += found.skipped
        out.visits.extend(found.visits)
        out.source = out.source or patient.source
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
    # the visits as the report needs them, in its order (backtest_report.summaries)
    summaries: list[VisitSummary] | None = None


#: Told the phase (its words) and its number of tasks, then ``progress(1)`` as each ends.
OnTasks = Callable[[str, int], None]


def run_backtest(
    path: Path,
    packs: Sequence[Pack],
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_tasks: OnTasks | None = None,
    in_memory_bytes: int = IN_MEMORY_BYTES,
    keep_visits: bool = True,
) -> Backtest:
    """Replay every ED visit under ``path`` with each pack (the first is the base).

    ``workers``: processes (default: every core; 1 runs in this process). ``on_tasks``
    is told each phase and its number of tasks, then ``progress`` is called with 1 as each
    one ends. NDJSON larger than ``in_memory_bytes`` is grouped by patient through an index
    of byte offsets on disk (``backtest_ndjson``). Without ``keep_visits``, the result
    holds only what the report needs of each visit (its ``summaries``, made by the workers;
    ``visits`` is empty): what the command line reports, at a fraction of the cost.
    Raises BacktestError naming the file on unreadable or malformed input.
    """
    packs = list(packs)
    bundles, ndjson = find_inputs(path)
    wanted = workers if workers is not None else (os.cpu_count() or 1)
    mode = RUNS  # how pass 1 finds each line's patient (see backtest_ndjson)
    # the outcomes are acyclic too: the collector would rescan every visit received so
    # far, again and again (on 10k patients, as much CPU as the rest of this process)
    with no_gc():
        while True:
            try:
                outcomes, used = _run_tasks(
                    bundles,
                    ndjson,
                    packs,
                    wanted,
                    mode,
                    (progress, on_tasks),
                    in_memory_bytes,
                    summarized=not keep_visits,
                )
                break
            except Misplaced:
                if mode == EXACT:
                    raise
                mode += 1
            except ChartError as exc:  # a resource no chart can take (NDJSON: no id)
                raise BacktestError(str(exc)) from None  # its message names file and line
        return collect(
            path, packs, outcomes, len(bundles), len(ndjson), used, summarized=not keep_visits
        )


def _run_tasks(
    bundles: list[Path],
    ndjson: list[Path],
    packs: list[Pack],
    wanted: int,
    mode: int,
    told: tuple[Callable[[int], None] | None, OnTasks | None],
    in_memory_bytes: int,
    summarized: bool,
) -> tuple[list[PatientOutcome], int]:
    """Every task's outcome and the workers used; a population's NDJSON indexed first.
    ``told``: the progress and the phases' callbacks; ``summarized``: each task's visits
    are sent as their summaries."""
    progress, on_tasks = told
    tasks: list[tuple[str, Any]] = []
    # largest first, so one big chart does not finish alone at the end
    sizes = {p: p.stat().st_size for p in bundles}
    tasks.extend(("bundle", str(p)) for p in sorted(bundles, key=lambda p: -sizes[p]))
    groups: list[list[ChartItem]] = []
    outcomes: list[PatientOutcome] = []
    with ExitStack() as stack:
        if ndjson and input_bytes(ndjson) > in_memory_bytes:
            folder = Path(stack.enter_context(temporary_folder()))
            stack.callback(release)
            pop = _index_ndjson(ndjson, folder, wanted, mode, progress, on_tasks)
            _POP[:] = [pop]
            stack.callback(_POP.clear)
            if pop.owned:
                tasks.extend(("bucket", i) for i in pop.filled())
        if ndjson and (not _POP or not _POP[0].owned):
            with no_gc():
                groups = list(split_by_patient(read_ndjson_files(ndjson)).values())
            tasks.extend(("group", i) for i in range(len(groups)))
        if on_tasks:
            on_tasks("replaying ED visits", len(tasks))
        used = max(1, min(wanted, len(tasks)))
        try:
            if used == 1:
                _init_worker(packs, groups, summarized)
                for task in tasks:
                    outcomes.append(_task(task))
                    if progress:
                        progress(1)
            else:
                outcomes = _run_pool(tasks, (packs, groups, summarized), used, progress)
        except (BacktestError, ChartError) as exc:
            if not _POP:
                raise
            # a bad line first, in file order; resources named file:line, not file:@offset
            found = first_error(ndjson)
            if found is None:
                found = type(exc)(numbered(str(exc), ndjson))
            raise found from None
        finally:
            _init_worker([], [])  # let the NDJSON resources go
            _KEEP.clear()
    return outcomes, used


def collect(
    path: Path,
    packs: list[Pack],
    outcomes: list[PatientOutcome],
    bundle_files: int,
    ndjson_files: int,
    workers: int,
    summarized: bool = False,
) -> Backtest:
    """The backtest from every task's outcome, in whatever order they ended; ``summarized``:
    only the visits' summaries are kept (``visits`` is empty), those the tasks sent and
    those of any visit a task sent whole."""
    outcomes.sort(key=lambda o: o.source)  # workers finish in any order
    skipped_files = [(o.source, o.not_fhir) for o in outcomes if o.not_fhir]
    if len(skipped_files) == bundle_files and not ndjson_files:
        names = "; ".join(f"skipped {name} ({why})" for name, why in skipped_files)
        raise BacktestError(f"{path}: no FHIR bundles (*.json) or NDJSON files: {names}")
    summaries = None
    if summarized:
        summaries = [s for o in outcomes for s in summed_up(o).summaries]
        summaries.sort(key=attrgetter("order"))  # (not a lambda: called per visit)
    visits = [v for o in outcomes for v in o.visits]
    visits.sort(key=report_order)
    return Backtest(
        path=path,
        packs=packs,
        bundle_files=bundle_files - len(skipped_files),
        ndjson_files=ndjson_files,
        workers=workers,
        patients=sum(o.patients for o in outcomes),
        skipped=sum(o.skipped for o in outcomes),
        visits=visits,
        skipped_files=skipped_files,
        summaries=summaries,
    )


def _index_ndjson(
    paths: list[Path],
    folder: Path,
    workers: int,
    mode: int,
    progress: Callable[[int], None] | None,
    on_tasks: OnTasks | None,
) -> Population:
    """Pass 1 (see backtest_ndjson): each chunk of each file indexed by patient, on forked
    workers."""

    def run(chunks: Sequence[Chunk], index: Callable[[Chunk], ChunkIndex]) -> list[ChunkIndex]:
        if on_tasks:
            on_tasks("grouping NDJSON by patient", len(chunks))

        def work(chunk: Chunk) -> ChunkIndex:
            with no_gc():
                return index(chunk)

        used = max(1, min(workers, len(chunks)))
        if used > 1 and fork_available():
            return run_forked(chunks, work, used, progress)
        found = []
        for chunk in chunks:
            found.append(work(chunk))
            if progress:
                progress(1)
        return found

    return run_indexing(folder, paths, mode, run)


def _run_pool(
    tasks: list[tuple[str, Any]],
    given: tuple[list[Pack], list[list[ChartItem]], bool],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[PatientOutcome]:
    """Run tasks on worker processes: forked ones (see backtest_pool) that inherit what they
    are ``given`` (packs, NDJSON groups, whether to summarize), else a spawned pool that is
    sent it."""
    packs, groups, summarized = given
    if fork_available():
        _init_worker(packs, groups, summarized)
        return run_forked(tasks, _task, workers, progress)
    ctx = multiprocessing.get_context("spawn")
    tasks = [_portable(k, a, groups) for k, a in tasks]
    outcomes = []
    initargs = (packs, None, summarized)
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        for outcome in pool.imap_unordered(_task, tasks, chunksize=1):
            outcomes.append(outcome)
            if progress:
                progress(1)
    return outcomes


def _portable(kind: str, arg: Any, groups: list[list[ChartItem]]) -> tuple[str, Any]:
    """A task as a spawned worker (which inherits nothing) can run it."""
    if kind == "group":
        return kind, groups[arg]
    if kind == "bucket":
        return kind, (_POP[0], arg)
    return kind, arg
