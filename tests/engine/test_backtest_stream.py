"""A population's patients read straight into their charts (``backtest_bucket``): what
the rules never read is left out as it is parsed, and the report, or the error, is the
in-memory reading's, whatever a patient's lines hold twice or whoever they name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.population import write_population
from smartapp.engine import Pack
from smartapp.engine.chart import coded_in
from smartapp.rulestools import backtest_files
from smartapp.rulestools.backtest import _index_ndjson
from smartapp.rulestools.backtest_bucket import bucket_charts
from smartapp.rulestools.backtest_ndjson import RUNS

from .helpers import backtest_outcome, with_line

IN_MEMORY = 1 << 40  # the reference: the NDJSON read in memory, in one process


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Synthea folder as a bulk export, 30 patients."""
    return write_population(tmp_path_factory.mktemp("population") / "ndjson", 30)


def _with_line(population: Path, tmp_path: Path, change: Any) -> Path:
    """The population with a line after the first Observation: ``change(first)``."""
    return with_line(
        population,
        tmp_path,
        "Observation.ndjson",
        lambda line: orjson.dumps(change(orjson.loads(line))),
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r,  # the same line twice
        lambda r: dict(reversed(r.items())),  # the same content, written otherwise
        lambda r: {**r, "status": "amended"},  # another version of the same key
        lambda r: {**r, "patient": {"reference": "Patient/someone-else"}},
        lambda r: {**r, "id": r["id"] + "x", "patient": {"reference": "Patient/someone-else"}},
    ],
    ids=["same-line", "same-content", "other-content", "another-patient", "names-two"],
)
def test_a_patients_lines_give_the_in_memorybacktest_outcome(
    population: Path, pack: Pack, tmp_path: Path, change: Any
) -> None:
    folder = _with_line(population, tmp_path, change)
    assert backtest_outcome(folder, pack, 0) == backtest_outcome(folder, pack, IN_MEMORY)


def test_the_population_gives_the_in_memory_report(population: Path, pack: Pack) -> None:
    assert backtest_outcome(population, pack, 0) == backtest_outcome(population, pack, IN_MEMORY)


def test_reading_a_bucket_maps_none_of_the_data_files(
    population: Path, pack: Pack, tmp_path: Path
) -> None:
    """Pass 2 reads each patient's lines at their offsets (``read_at``), not from the files
    mapped in memory: a mapped page stays resident in the worker until unmapped, and a
    kernel that maps its page cache's large folios whole made a worker resident in up to
    1.2 GB of the files for a bucket's few scattered lines (100k patients)."""

    def mapped_data() -> set[str]:
        names = {p.name for p in population.glob("*.ndjson")}
        with open("/proc/self/maps") as maps:
            return {n for line in maps for n in names if line.rstrip().endswith(f"/{n}")}

    paths = sorted(population.glob("*.ndjson"))
    pop = _index_ndjson(paths, tmp_path, 1, RUNS, None, None)  # pass 1, in this process
    backtest_files.release()  # pass 1 maps its chunks (each read through, then released)
    keep = coded_in(pack.valuesets.values())
    seen = 0
    try:
        for bucket in pop.filled():
            for patient in bucket_charts(pop, bucket, keep):
                charts = list(patient.charts())
                assert charts and charts[0].patient is not None
                assert mapped_data() == set()  # while the bucket's lines are being read
                seen += 1
    finally:
        backtest_files.release()
    assert seen == len((population / "Patient.ndjson").read_bytes().splitlines())
