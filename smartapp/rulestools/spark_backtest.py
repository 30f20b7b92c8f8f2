"""``handoff rules backtest --engine spark``: the same backtest on Apache Spark (PySpark).

The tasks are the single-machine backtest's own (``backtest._work``: the same engine code,
the same charts), run on Spark's executors; the outcomes come back to the driver and make
the same report (``backtest.collect``, ``backtest_report``):

- bundle files: one task each, spread over the cluster;
- NDJSON (``.ndjson``, ``.ndjson.gz``; read by Spark, split across tasks): every line is
  checked where it is (``file:line``) and keyed by the patient it is about, then shuffled
  so each partition holds whole patients (the shuffle is the single-machine backtest's
  buckets); the first job reads the shuffled lines' keys only (the first malformed line,
  in file order, is the error; Medications about no patient go to every chart), the second
  re-uses the same shuffle and replays each patient's visits, its resources in file and
  line order as the in-memory reading orders them.

PySpark is an optional extra (``pip install 'handoff[spark]'``, Java 17) imported only
here, lazily; the engine never imports it. Local mode by default (``local[*]``), any master
by URL; on a cluster the input path must be readable by every executor (a shared file
system) and the executors need Handoff's dependencies (Handoff itself is shipped).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smartapp.engine import Pack
from smartapp.engine.chart import ChartItem
from smartapp.engine.history import patient_of, split_by_patient
from smartapp.rulestools import backtest
from smartapp.rulestools.backtest import Backtest, OnTasks, PatientOutcome, collect
from smartapp.rulestools.backtest_files import input_bytes, line_at, numbered
from smartapp.rulestools.backtest_input import (
    BacktestError,
    checked_line,
    find_inputs,
    ndjson_resource,
)
from smartapp.rulestools.backtest_ndjson import BUCKET_BYTES

DEFAULT_MASTER = "local[*]"
_ERROR, _SHARED, _NONE = "!error", "!shared", "!none"  # keys that are not a patient's
_APP = "handoff rules backtest"
# Hadoop's text reader: (byte offset, line) records, split across tasks, gzip by extension
_TEXT = "org.apache.hadoop.mapreduce.lib.input.TextInputFormat"
_OFFSET, _LINE = "org.apache.hadoop.io.LongWritable", "org.apache.hadoop.io.Text"


def run_spark_backtest(
    path: Path,
    packs: Iterable[Pack],
    master: str = DEFAULT_MASTER,
    progress: Callable[[int], None] | None = None,
    on_tasks: OnTasks | None = None,
    partitions: int | None = None,
    keep_visits: bool = True,
) -> Backtest:
    """Replay every ED visit under ``path`` on Spark; the same Backtest as run_backtest
    (``workers``: Spark's default parallelism; without ``keep_visits``, the executors send
    each visit's summary, not its timelines). Uses the active SparkContext if there is
    one (and leaves it running), else starts one on ``master`` and stops it at the end.
    Raises BacktestError naming the file (and line) on unreadable or malformed input."""
    packs = list(packs)
    bundles, ndjson = find_inputs(path)
    sc, started = _context(master)
    try:
        with _watch(sc, progress, on_tasks) as phase:
            shared = sc.broadcast(packs)
            summarize = not keep_visits
            outcomes = _bundles(sc, bundles, shared, phase, summarize) if bundles else []
            if ndjson:
                outcomes += _ndjson(sc, ndjson, (shared, summarize), phase, partitions)
        errors = sorted(str(o.not_fhir) for o in outcomes if o.source == _ERROR)
        if errors:
            raise BacktestError(numbered(errors[0], ndjson))
        workers = sc.defaultParallelism
    except BacktestError:
        raise
    except Exception as exc:  # Py4JJavaError, PySparkException: Spark's own words, shortened
        raise BacktestError(f"{path}: Spark failed: {_first_line(exc)}") from exc
    finally:
        if started:
            sc.stop()
    return collect(
        path, packs, outcomes, len(bundles), len(ndjson), workers, summarized=not keep_visits
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "Error" in line or "Exception" in line:
            return line.strip()[:500]
    return text.splitlines()[0][:500] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------
# the context


def _context(master: str) -> tuple[Any, bool]:
    """The active SparkContext, else a new one on ``master`` (and whether it is new)."""
    try:
        from pyspark import SparkConf, SparkContext
    except ImportError as exc:
        raise BacktestError(
            "--engine spark needs PySpark: pip install 'handoff[spark]' (and Java 17)"
        ) from exc
    active = SparkContext._active_spark_context
    if active is not None:
        return active, False
    conf = SparkConf().setAppName(_APP).setMaster(master)
    conf.set("spark.ui.showConsoleProgress", "false")  # ours is shown instead
    if master.startswith("local"):
        conf.set("spark.ui.enabled", "false")
        if not os.environ.get("PYSPARK_PYTHON"):
            conf.set("spark.pyspark.python", sys.executable)  # this environment's engine
        conf.set("spark.driver.memory", os.environ.get("HANDOFF_SPARK_DRIVER_MEMORY", "2g"))
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # PySpark starts its Python workers with PYSPARK_PYTHON, else `python3` on the PATH
        # (spark.pyspark.python is read by spark-submit, not here): outside this environment,
        # where Handoff's dependencies may be missing (msgspec, orjson: ModuleNotFoundError)
        sc.pythonExec = sys.executable
    if not master.startswith("local"):
        sc.addPyFile(str(_package_zip()))  # the executors run this very engine code
    return sc, True


def _package_zip() -> Path:
    """Handoff's Python code as a zip for the executors (``SparkContext.addPyFile``)."""
    root = Path(__file__).resolve().parents[1]
    target = Path(tempfile.mkdtemp(prefix="handoff-spark-")) / "smartapp.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in root.rglob("*.py"):
            zf.write(file, file.relative_to(root.parent))
    return target


@contextmanager
def _watch(
    sc: Any, progress: Callable[[int], None] | None, on_tasks: OnTasks | None
) -> Iterator[Callable[[str], None]]:
    """Progress from Spark's status tracker (polled): each stage of our jobs a phase
    (``on_tasks``), its tasks as they complete (``progress``). Yields ``phase(words)``,
    called before each job to name the stages that follow."""
    group = f"handoff-backtest-{os.getpid()}-{id(sc)}"
    sc.setJobGroup(group, _APP)
    words = ["starting"]
    stop = threading.Event()

    tracker = sc.statusTracker()
    shown: dict[int, int] = {}  # stage id: completed tasks told
    current: list[int | None] = [None]

    def poll() -> None:
        while not stop.wait(0.5):
            look()
        look()  # once more: the stages that ran since the last look (a short last job)

    def look() -> None:
        """Tell the stages of our jobs that started, and their tasks done since the last look."""
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in sorted(job.stageIds) if job else ():
                stage = tracker.getStageInfo(stage_id)
                if stage is None or stage.numTasks == 0:
                    continue
                if stage_id not in shown:
                    if stage.numActiveTasks == 0 and stage.numCompletedTasks == 0:
                        continue  # not started (or skipped: its shuffle is re-used)
                    shown[stage_id] = 0
                    current[0] = stage_id
                    if on_tasks:
                        on_tasks(f"{words[0]} (Spark stage {stage_id})", stage.numTasks)
                done = stage.numCompletedTasks - shown[stage_id]
                if done > 0 and stage_id == current[0] and progress:
                    progress(done)
                shown[stage_id] += max(done, 0)

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    if progress or on_tasks:
        thread.start()
    try:
        yield lambda text: words.__setitem__(0, text)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


# ---------------------------------------------------------------------------------------
# the jobs (their functions run on the executors)


def _bundles(
    sc: Any, bundles: list[Path], packs: Any, phase: Callable[[str], None], summarize: bool
) -> list:
    """One task per bundle file, largest first (``summarize``: each visit sent summed up)."""
    paths = [str(p) for p in sorted(bundles, key=lambda p: -p.stat().st_size)]
    slices = min(len(paths), sc.defaultParallelism * 4)
    phase("replaying ED visits of bundles")
    return sc.parallelize(paths, slices).map(lambda p: _bundle(p, packs, summarize)).collect()


def _bundle(path: str, packs: Any, summarize: bool) -> PatientOutcome:
    _ensure(packs)
    try:
        out = backtest._task(("bundle", path))
    except BacktestError as exc:
        return PatientOutcome(source=_ERROR, not_fhir=str(exc))
    return backtest.summed_up(out) if summarize else out


_LOADED: dict[str, int] = {}


def _ensure(packs: Any) -> None:
    """The packs in this executor's process, once per broadcast (workers are re-used)."""
    value = packs.value  # read once a process, then cached by PySpark
    if _LOADED.get("packs") != id(value):
        backtest._init_worker(value, None)
        _LOADED["packs"] = id(value)


def _ndjson(
    sc: Any,
    paths: list[Path],
    given: tuple[Any, bool],
    phase: Callable[[str], None],
    partitions: int | None,
) -> list[PatientOutcome]:
    """Key every line by its patient, shuffle whole patients together, check, replay;
    ``given``: the packs' broadcast, and whether each visit is sent summed up."""
    packs, summarize = given
    phase("grouping NDJSON by patient")
    lines = [
        sc.newAPIHadoopFile(p.resolve().as_uri(), _TEXT, _OFFSET, _LINE).flatMap(_keyer(index))
        for index, p in enumerate(paths)
    ]
    count = partitions or max(sc.defaultParallelism * 2, input_bytes(paths) // BUCKET_BYTES)
    shuffled = sc.union(lines).partitionBy(count)
    summaries = shuffled.mapPartitions(_summary).collect()
    errors = sorted(e for s in summaries for e in s["errors"])
    if errors:
        index, offset, message = errors[0]
        raise BacktestError(f"{line_at(paths[index], offset)}{message}")
    names = [str(p) for p in paths]
    if not any(s["owned"] for s in summaries):  # about no patient: one group, as in memory
        rows = sorted(shuffled.filter(lambda kv: kv[0] in (_SHARED, _NONE)).values().collect())
        groups = list(split_by_patient([_parsed(names, *row) for row in rows]).values())
        backtest._init_worker(packs.value, None)
        try:
            return [backtest._replay_groups(groups, backtest._KEEP[0])]
        finally:
            backtest._init_worker([], [])
            backtest._KEEP.clear()
    medications = sc.broadcast(sorted(r for s in summaries for r in s["shared"]))
    phase("replaying ED visits")
    return shuffled.mapPartitions(
        lambda rows: _replay(rows, (packs, summarize), medications, names)
    ).collect()


def _keyer(index: int) -> Callable[[tuple[int, str]], list[tuple[str, Any]]]:
    """A line (and its byte offset) to ``(patient key, (file index, offset, line))``; a
    malformed one to ``(_ERROR, (file index, offset, what is wrong))``.

    Spark's reader gives each line's offset, not its number (counting lines would be a
    second pass over the input): the number is counted on the driver for the one error
    it reports (``backtest_files.line_at``), and offsets order a patient's lines as numbers
    would."""

    def keyed(pair: tuple[int, str]) -> list[tuple[str, Any]]:
        offset, line = pair
        try:
            resource = ndjson_resource(line, "")
        except BacktestError as exc:
            return [(_ERROR, (index, offset, str(exc)))]
        if resource is None:
            return []
        owner = patient_of((None, resource, f"@{offset}"))
        if owner is None:
            key = _SHARED if resource["resourceType"] == "Medication" else _NONE
            return [(key, (index, offset, line))]
        return [(owner, (index, offset, line))]

    return keyed


def _summary(rows: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """A partition's malformed lines (the first is enough), shared Medications, and how
    many lines are about a patient."""
    out: dict[str, Any] = {"errors": [], "shared": [], "owned": 0}
    for key, row in rows:
        if key == _ERROR:
            out["errors"] = sorted([*out["errors"], row])[:1]
        elif key == _SHARED:
            out["shared"].append(row)
        elif key != _NONE:
            out["owned"] += 1
    return [out]


def _parsed(names: list[str], index: int, offset: int, line: str) -> ChartItem:
    return (None, checked_line(line), f"{names[index]}:@{offset}")  # an offset: see _keyer


def _replay(
    rows: Iterable[tuple[str, Any]], given: tuple[Any, bool], medications: Any, names: list[str]
) -> list[PatientOutcome]:
    """A partition's patients, each chart in file and line order, replayed as one task
    (``given``: the packs' broadcast, and whether each visit is sent summed up)."""
    packs, summarize = given
    _ensure(packs)
    by_patient: dict[str, list[tuple[int, int, str]]] = {}
    for key, row in rows:
        if not key.startswith("!"):
            by_patient.setdefault(key, []).append(row)
    shared = [_parsed(names, *row) for row in medications.value]
    groups = []
    for found in by_patient.values():
        found.sort()
        groups.append([*(_parsed(names, *row) for row in found), *shared])
    try:
        with backtest.no_gc():
            out = backtest._replay_groups(groups, backtest._KEEP[0])
            return [backtest.summed_up(out) if summarize else out]
    except BacktestError as exc:
        return [PatientOutcome(source=_ERROR, not_fhir=str(exc))]
