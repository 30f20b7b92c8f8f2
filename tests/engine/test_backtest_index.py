"""The single-machine backtest's NDJSON index (``backtest_ndjson``): each line's patient
read from a hint where it can, checked once the line is parsed, the same report as the
in-memory reading whatever the chunks, buckets, JSON layout or a hint that is wrong."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.population import write_population
from smartapp.engine import Pack
from smartapp.engine.history import patient_of
from smartapp.rulestools import backtest_ndjson
from smartapp.rulestools.backtest import BacktestError, report, run_backtest
from smartapp.rulestools.backtest_ndjson import EXACT, LINES, RUNS, _owner, bucket_of

from .helpers import run_free

IN_MEMORY = 1 << 40  # the reference: the NDJSON read in memory, in one process


def _same(result: Any) -> dict[str, Any]:
    return run_free(report(result))


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Synthea folder as a bulk export, 100 patients."""
    return write_population(tmp_path_factory.mktemp("population") / "ndjson", 100)


@pytest.fixture(scope="module")
def expected(population: Path, pack: Pack) -> dict[str, Any]:
    return _same(run_backtest(population, [pack], workers=1, in_memory_bytes=IN_MEMORY))


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 64 kB and buckets of 1 MB: many of each."""
    monkeypatch.setattr(backtest_ndjson, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(backtest_ndjson, "BUCKET_BYTES", 1024 * 1024)


def _modes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each indexing task's mode (in this process: one worker)."""
    seen: list[int] = []
    index_chunk = backtest_ndjson.index_chunk

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[4] if len(args) > 4 else kwargs.get("mode", RUNS))
        return index_chunk(*args, **kwargs)

    monkeypatch.setattr(backtest_ndjson, "index_chunk", spy)
    return seen


def test_many_chunks_and_buckets_give_the_in_memory_report(
    population: Path, expected: dict, pack: Pack, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _modes(monkeypatch)
    assert len(backtest_ndjson.plan_chunks(sorted(population.glob("*.ndjson")))) > 20
    for workers in (1, 2):
        assert _same(run_backtest(population, [pack], workers, in_memory_bytes=0)) == expected
    assert seen and set(seen) == {RUNS}  # every hint and run was right: indexed once


def test_lines_not_sorted_by_patient_are_indexed_again_line_by_line(
    population: Path, pack: Pack, small: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shuffled Observations: runs taken from their last line's hint hold other patients'
    lines, found out in the buckets; indexed again line by line, the same report."""
    folder = tmp_path / "shuffled"
    shutil.copytree(population, folder)
    path = folder / "Observation.ndjson"
    lines = path.read_bytes().splitlines()
    random.Random(15).shuffle(lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = _same(run_backtest(folder, [pack], workers=1, in_memory_bytes=IN_MEMORY))
    seen = _modes(monkeypatch)
    assert _same(run_backtest(folder, [pack], workers=1, in_memory_bytes=0)) == expected
    assert RUNS in seen and LINES in seen and EXACT not in seen


def test_json_with_spaces_is_parsed_in_the_first_pass(
    population: Path, pack: Pack, small: None, tmp_path: Path
) -> None:
    """No compact ``"subject":{"reference":`` to read: each line parsed to find its
    patient (and once more in its bucket); the same report."""
    folder = tmp_path / "spaced"
    shutil.copytree(population, folder)
    for name in ("Condition.ndjson", "Observation.ndjson"):
        lines = (folder / name).read_text().splitlines()
        (folder / name).write_text("".join(json.dumps(json.loads(x)) + "\n" for x in lines))
    expected = _same(run_backtest(folder, [pack], workers=1, in_memory_bytes=IN_MEMORY))
    assert _same(run_backtest(folder, [pack], workers=2, in_memory_bytes=0)) == expected


def test_a_wrong_hint_starts_again_parsing_every_line(
    population: Path, pack: Pack, small: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Observation's first ``subject`` is a contained resource's, naming a
    patient of another bucket: found out there, and the whole index made again, by runs,
    then by lines, then parsing every line."""
    folder = tmp_path / "contained"
    shutil.copytree(population, folder)
    patients = [json.loads(x)["id"] for x in (folder / "Patient.ndjson").read_text().splitlines()]
    buckets = backtest_ndjson.bucket_count(sorted(folder.glob("*.ndjson")))
    path = folder / "Observation.ndjson"
    lines = path.read_bytes().splitlines()
    resource = orjson.loads(lines[0])
    owner = resource["subject"]["reference"]
    other = next(
        p for p in patients if bucket_of(f"Patient/{p}", buckets) != bucket_of(owner, buckets)
    )
    nested = {
        "resourceType": "Observation",
        "id": "c1",
        "subject": {"reference": f"Patient/{other}"},
    }
    lines[0] = orjson.dumps({"resourceType": "Observation", "contained": [nested], **resource})
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = _same(run_backtest(folder, [pack], workers=1, in_memory_bytes=IN_MEMORY))
    seen = _modes(monkeypatch)
    assert _same(run_backtest(folder, [pack], workers=1, in_memory_bytes=0)) == expected
    assert RUNS in seen and LINES in seen and EXACT in seen


def test_a_malformed_line_in_a_later_chunk_is_named(
    population: Path, pack: Pack, small: None, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(population, folder)
    path = folder / "Observation.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[999] = lines[999][:60] + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(BacktestError, match=r"Observation\.ndjson:1000: not valid JSON"):
        run_backtest(folder, [pack], workers=2, in_memory_bytes=0)


def test_a_blank_line_and_no_final_newline_keep_line_numbers(
    population: Path, pack: Pack, small: None, tmp_path: Path
) -> None:
    folder = tmp_path / "blank"
    shutil.copytree(population, folder)
    path = folder / "Condition.ndjson"
    lines = path.read_bytes().splitlines()
    lines.insert(5, b"  ")
    lines[-1] = lines[-1][:30]
    path.write_bytes(b"\n".join(lines))  # no newline at the end
    with pytest.raises(BacktestError, match=rf"Condition\.ndjson:{len(lines)}: not valid JSON"):
        run_backtest(folder, [pack], workers=2, in_memory_bytes=0)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/p1"}},
        {"resourceType": "Observation", "id": "o", "subject": {"reference": " Patient/p1 "}},
        {
            "resourceType": "Observation",
            "id": "o",
            "subject": {"reference": "http://x/fhir/Patient/p1/_history/2"},
        },
        {"resourceType": "Observation", "id": "o", "subject": {"reference": "Group/g"}},
        {"resourceType": "Observation", "id": "o", "subject": {"reference": ""}},
        {"resourceType": "Observation", "id": "o", "subject": {"reference": "urn:uuid:1"}},
        {"resourceType": "Observation", "id": "o", "subject": {"display": "x"}},
        {"resourceType": "Observation", "id": "o", "subject": "Patient/p1"},
        {"resourceType": "Observation", "id": "o", "subject": {"reference": 3}},
        {
            "resourceType": "AllergyIntolerance",
            "id": "a",
            "subject": {"reference": "Group/g"},
            "patient": {"reference": "Patient/p2"},
        },
        {"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p2"}},
        {"resourceType": "Medication", "id": "m"},
    ],
)
def test_owner_is_patient_of(resource: dict[str, Any]) -> None:
    item = (None, resource, "x:1")
    assert _owner(item, {}) == patient_of(item)


def test_owner_is_patient_of_every_population_line(population: Path) -> None:
    refs: dict[str, str | None] = {}
    for path in population.glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            item = (None, orjson.loads(line), "x:1")
            assert _owner(item, refs) == patient_of(item)


def test_a_chart_error_names_file_and_line_as_in_memory(
    population: Path, pack: Pack, small: None, tmp_path: Path
) -> None:
    """Resources are named ``file:@offset`` in the buckets; an error names ``file:line``."""
    folder = tmp_path / "twice"
    shutil.copytree(population, folder)
    path = folder / "Condition.ndjson"
    lines = path.read_bytes().splitlines()
    resource = orjson.loads(lines[0])
    lines.insert(3, orjson.dumps({**resource, "recordedDate": "1999-01-01"}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(BacktestError) as in_memory:
        run_backtest(folder, [pack], workers=1, in_memory_bytes=IN_MEMORY)
    with pytest.raises(BacktestError) as on_disk:
        run_backtest(folder, [pack], workers=2, in_memory_bytes=0)
    assert "Condition.ndjson:4" in str(in_memory.value)
    assert str(on_disk.value) == str(in_memory.value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_file_sorted_by_patient_is_one_run_a_patient(seed: int) -> None:
    """Pass 1 on lines sorted by patient, runs of very different lengths one after the
    other (1 to 400 lines; the first window is the run before's length): each patient's
    lines are one run, from its first line to its last, whatever the run before."""
    rng = random.Random(seed)
    patients = [f"p{n}" for n in range(60)]
    counts = [rng.choice([1, 2, 3, 40, 400]) for _ in patients]
    data, expected = b"", []
    for patient, count in zip(patients, counts, strict=True):
        start = len(data)
        for n in range(count):
            line = {
                "resourceType": "Observation",
                "id": f"{patient}-{n}",
                "subject": {"reference": f"Patient/{patient}"},
                "note": "x" * rng.randint(0, 3000),
            }
            data += orjson.dumps(line) + b"\n"
        tag = backtest_ndjson.tag_of(f"Patient/{patient}")
        expected.append((start, len(data) - 1 - start, tag))
    indexer = backtest_ndjson._Indexer(1, RUNS, backtest_ndjson.ChunkIndex(0))
    indexer.feed(data[:-1])  # the last line without its newline, as at a file's end
    found = indexer.rows[0].tolist()
    runs = [tuple(found[i : i + 3]) for i in range(0, len(found), 3)]
    assert runs == expected
