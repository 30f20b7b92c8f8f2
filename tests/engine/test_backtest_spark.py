"""The backtest at population scale (issue 15 item 3): bulk NDJSON read streaming (plain and
gzip), grouped by patient on disk, and the same backtest on Apache Spark, all giving the
report the single-machine, in-memory backtest gives (the report's ``workers`` aside: it is
the run's own); malformed lines named ``file:line`` by every engine; progress on stderr.

The Spark tests start one local Spark (``local[2]``, Java 17) for the module; they need the
``spark`` extra (in the test lock, so CI runs them).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.population import write_population
from smartapp.engine import Pack
from smartapp.rulestools import backtest_ndjson
from smartapp.rulestools.backtest import BacktestError, report, report_text, run_backtest
from smartapp.rulestools.backtest_progress import Progress

from .helpers import SYNTHEA, run_cli, run_free
from .test_backtest_speed import variant_pack


def _same(result: Any) -> dict[str, Any]:
    return run_free(report(result))


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Synthea folder as a bulk export (one NDJSON file per type), 200 patients."""
    return write_population(tmp_path_factory.mktemp("population") / "ndjson", 200)


@pytest.fixture(scope="module")
def expected(population: Path, pack: Pack) -> dict[str, Any]:
    """The single-machine backtest of the population, read in memory, one process."""
    return _same(run_backtest(population, [pack], workers=1, in_memory_bytes=1 << 40))


def _gzipped(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for path in src.glob("*.ndjson"):
        with path.open("rb") as f, gzip.open(dest / f"{path.name}.gz", "wb", 1) as out:
            shutil.copyfileobj(f, out)
    return dest


def _broken(src: Path, dest: Path, line: int = 3) -> Path:
    """The population with line ``line`` of Condition.ndjson cut short."""
    shutil.copytree(src, dest)
    path = dest / "Condition.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[line - 1] = lines[line - 1][:40] + b"\n"
    path.write_bytes(b"".join(lines))
    return dest


# ---------------------------------------------------------------------------------------
# the single machine: NDJSON streaming, on disk, gzip


def test_population_has_new_ids_for_each_copy(population: Path, expected: dict) -> None:
    """Two copies of the Synthea folder's 100 patients: 200 patients, twice the visits
    (227 ED visits in the bundles), no id shared between copies."""
    assert expected["patients"] == 200
    assert expected["visits"] == 2 * 227
    assert expected["input"]["ndjson_files"] == len(list(population.glob("*.ndjson")))
    ids = [json.loads(x)["id"] for x in (population / "Patient.ndjson").read_text().splitlines()]
    assert len(set(ids)) == 200


def test_grouped_on_disk_gives_the_in_memory_report(
    population: Path, expected: dict, pack: Pack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the in-memory size, the NDJSON is split into buckets by patient (here 4 MB
    buckets: several) and replayed bucket by bucket: the same report, on 1 or 2 workers."""
    monkeypatch.setattr(backtest_ndjson, "BUCKET_BYTES", 4 * 1024 * 1024)
    assert backtest_ndjson.bucket_count(list(population.glob("*.ndjson"))) > 3
    for workers in (1, 2):
        result = run_backtest(population, [pack], workers=workers, in_memory_bytes=0)
        assert _same(result) == expected


def test_gzip_ndjson_gives_the_same_report(
    population: Path, expected: dict, pack: Pack, tmp_path: Path
) -> None:
    folder = _gzipped(population, tmp_path / "gz")
    assert _same(run_backtest(folder, [pack], workers=1)) == expected
    assert _same(run_backtest(folder, [pack], workers=2, in_memory_bytes=0)) == expected


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_malformed_line_is_named_file_and_line(
    population: Path, pack: Pack, tmp_path: Path, on_disk: bool
) -> None:
    folder = _broken(population, tmp_path / "broken")
    where = f"{folder / 'Condition.ndjson'}:3: not valid JSON"
    with pytest.raises(BacktestError, match="^" + __import__("re").escape(where)):
        run_backtest(folder, [pack], workers=2, in_memory_bytes=0 if on_disk else 1 << 40)


def test_a_truncated_gzip_file_is_named(population: Path, pack: Pack, tmp_path: Path) -> None:
    folder = _gzipped(population, tmp_path / "gz")
    path = folder / "Observation.ndjson.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BacktestError, match=r"Observation\.ndjson\.gz:\d+: cannot read"):
        run_backtest(folder, [pack], workers=1)


def test_progress_lines_without_a_terminal() -> None:
    """Not a terminal: a line per phase start, at most every few seconds, and at the end."""
    out = io.StringIO()
    progress = Progress(out, redraw=False, every=3600)
    progress.start("replaying ED visits", 4)
    for _ in range(4):
        progress.advance(1)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("replaying ED visits: 0/4 tasks (0%), 0:0")
    assert lines[-1].startswith("replaying ED visits: 4/4 tasks (100%), 0:0")
    assert len(lines) == 2


def test_cli_shows_progress_of_both_phases_when_asked(population: Path) -> None:
    proc = run_cli("backtest", str(population), "--workers", "2", "--progress", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["visits"] == 2 * 227
    assert "grouping NDJSON by patient: 6/6 tasks (100%)" in proc.stderr
    assert re.search(r"replaying ED visits: (\d+)/\1 tasks \(100%\)", proc.stderr)
    quiet = run_cli("backtest", str(population), "--workers", "2", "--json")
    assert quiet.stderr == ""


def test_cli_refuses_mixed_engine_options(population: Path) -> None:
    proc = run_cli("backtest", str(population), "--master", "local[2]")
    assert proc.returncode == 2
    assert "--master is for --engine spark" in proc.stderr


# ---------------------------------------------------------------------------------------
# Spark


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark for the module (run_spark_backtest uses the active context)."""
    pyspark = pytest.importorskip("pyspark")
    conf = pyspark.SparkConf().setMaster("local[2]").setAppName("handoff-tests")
    conf.set("spark.ui.enabled", "false").set("spark.ui.showConsoleProgress", "false")
    conf.set("spark.pyspark.python", sys.executable)
    sc = pyspark.SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    sc.pythonExec = sys.executable  # as run_spark_backtest's own context (see _context)
    yield sc
    sc.stop()


@pytest.mark.slow
def test_spark_gives_the_same_report_on_ndjson_and_gzip(
    spark: Any, population: Path, expected: dict, pack: Pack, tmp_path: Path
) -> None:
    from smartapp.rulestools.spark_backtest import run_spark_backtest

    phases: list[tuple[str, int]] = []
    done: list[int] = []
    result = run_spark_backtest(
        population, [pack], on_tasks=lambda w, n: phases.append((w, n)), progress=done.append
    )
    assert _same(result) == expected
    assert result.workers == 2
    # progress: Spark's stages as phases, their tasks as they end
    assert any(w.startswith("replaying ED visits (Spark stage") for w, _ in phases)
    assert sum(done) > 0
    folder = _gzipped(population, tmp_path / "gz")
    assert _same(run_spark_backtest(folder, [pack])) == expected
    # the executors send each visit summed up, as the command line asks
    summed = run_spark_backtest(population, [pack], keep_visits=False)
    assert summed.visits == [] and summed.summaries and _same(summed) == expected


@pytest.mark.slow
def test_spark_gives_the_same_report_on_bundles_with_a_compared_pack(
    spark: Any, pack: Pack, tmp_path: Path
) -> None:
    """The Synthea bundles, the default pack against one with other windows (differences)."""
    from smartapp.rulestools.spark_backtest import run_spark_backtest

    packs = [pack, variant_pack(tmp_path, "windows")]
    single = _same(run_backtest(SYNTHEA, packs, workers=2))
    assert single["compare"]["differences"]
    assert _same(run_spark_backtest(SYNTHEA, packs)) == single
    summed = run_spark_backtest(SYNTHEA, packs, keep_visits=False)
    assert summed.visits == [] and _same(summed) == single
    assert report_text(summed) == report_text(run_backtest(SYNTHEA, packs, workers=2))


@pytest.mark.slow
def test_spark_names_a_malformed_line(
    spark: Any, population: Path, pack: Pack, tmp_path: Path
) -> None:
    from smartapp.rulestools.spark_backtest import run_spark_backtest

    folder = _broken(population, tmp_path / "broken", line=5)
    with pytest.raises(BacktestError) as found:
        run_spark_backtest(folder, [pack])
    assert str(found.value).startswith(f"{folder / 'Condition.ndjson'}:5: not valid JSON")
    gz = _gzipped(folder, tmp_path / "broken-gz")
    with pytest.raises(BacktestError) as found:
        run_spark_backtest(gz, [pack])
    assert str(found.value).startswith(f"{gz / 'Condition.ndjson.gz'}:5: not valid JSON")


@pytest.mark.slow
def test_cli_spark_engine_report_and_progress(population: Path, expected: dict) -> None:
    """``handoff rules backtest --engine spark`` in its own process (its own local Spark)."""
    proc = run_cli(
        "backtest", str(population), "--engine", "spark", "--master", "local[2]",
        "--progress", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = run_free(json.loads(proc.stdout))
    assert data == expected
    assert "replaying ED visits (Spark stage" in proc.stderr
