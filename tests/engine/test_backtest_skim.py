"""Lines skimmed before they are parsed (``backtest_skim``): a population's resources no
rule reads are left out from their type, id, codes and owners, read by msgspec, and the
report, or the error, is still the in-memory reading's (orjson's, every line in full);
the one difference, a number too large for a float in a skipped element, is pinned."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.population import write_population
from smartapp.engine import Pack
from smartapp.engine.chart import coded_in
from smartapp.engine.chart_stream import ChartStream
from smartapp.engine.fhir import coding_tuple
from smartapp.rulestools.backtest_skim import codes_of_head, read_head

from .helpers import backtest_outcome, run_cli, with_line

IN_MEMORY = 1 << 40  # the reference: every line parsed in full by orjson


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Synthea folder as a bulk export, 20 patients."""
    return write_population(tmp_path_factory.mktemp("population") / "ndjson", 20)


@pytest.fixture
def skimmed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The keys left out unparsed (in this process: the backtests here run on one)."""
    keys: list[str] = []
    add_unread = ChartStream.add_unread

    def counted(self: ChartStream, rtype: str, key: str, *rest: Any) -> bool:
        left = add_unread(self, rtype, key, *rest)
        if left:
            keys.append(key)
        return left

    monkeypatch.setattr(ChartStream, "add_unread", counted)
    yield keys


def _new_id(line: bytes) -> bytes:
    resource = orjson.loads(line)
    return orjson.dumps({**resource, "id": resource["id"] + "-copy"})


def _id_of(line: bytes) -> bytes:
    return orjson.dumps(orjson.loads(line)["id"])


def _other_id_with(extra: bytes) -> Callable[[bytes], bytes]:
    """A copy under a new id, with ``extra`` (JSON members) before its closing brace."""
    return lambda line: _new_id(line)[:-1] + b"," + extra + b"}"


def test_most_lines_of_a_population_are_skimmed_and_the_report_is_the_in_memory_one(
    population: Path, pack: Pack, skimmed: list[str]
) -> None:
    assert backtest_outcome(population, pack, 0) == backtest_outcome(population, pack, IN_MEMORY)
    observations = (population / "Observation.ndjson").read_bytes().count(b"\n")
    assert len(skimmed) > observations // 2
    assert all(not key.startswith(("Encounter/", "Patient/")) for key in skimmed)


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        # taken in full: not ASCII, or an element of another shape than a resource's
        ("Observation.ndjson", _other_id_with('"note":[{"text":"poids pr\u00e9cis"}]'.encode())),
        ("Observation.ndjson", _other_id_with(b'"code":"8302-2"')),
        ("Observation.ndjson", _other_id_with(b'"code":{"coding":["8302-2"]}')),
        ("Observation.ndjson", _other_id_with(b'"subject":null,"patient":{"reference":"x"}')),
        ("Condition.ndjson", _other_id_with(b'"subject":{"reference":7}')),
        ("Observation.ndjson", _other_id_with(b'"resourceType":"Patient"')),
        ("Observation.ndjson", _other_id_with(b'"id":""')),
        # a member written twice: the last one counts, in both readings (here the first
        # line's id, another version of its key: the in-memory error)
        ("Observation.ndjson", lambda line: _other_id_with(b'"id":' + _id_of(line))(line)),
        # malformed in an element skimming skips: the in-memory error
        ("Observation.ndjson", _other_id_with(b'"note":"\\q"')),
        ("Observation.ndjson", _other_id_with(b'"note":[1,]')),
        ("Observation.ndjson", _other_id_with(b'"note":NaN')),
        ("Observation.ndjson", _other_id_with(b'"note":' + b"[" * 1500 + b"]" * 1500)),
        ("Observation.ndjson", lambda line: _new_id(line) + b" x"),
        # the same key again, its line a byte apart
        ("Observation.ndjson", lambda line: line.replace(b'"final"', b'"amended"')),
    ],
    ids=[
        "not-ascii",
        "code-a-string",
        "coding-not-objects",
        "subject-null",
        "reference-a-number",
        "type-written-twice",
        "empty-id",
        "id-written-twice",
        "bad-escape",
        "trailing-comma",
        "nan",
        "too-deep",
        "trailing-text",
        "same-key-other-content",
    ],
)
def test_a_line_skimming_does_not_take_gives_the_in_memorybacktest_outcome(
    population: Path, pack: Pack, tmp_path: Path, name: str, edit: Callable[[bytes], bytes]
) -> None:
    folder = with_line(population, tmp_path, name, edit)
    assert backtest_outcome(folder, pack, 0) == backtest_outcome(folder, pack, IN_MEMORY)


def test_a_number_too_large_for_a_float_in_an_unread_element_is_left_out_with_its_line(
    population: Path, pack: Pack, tmp_path: Path, skimmed: list[str]
) -> None:
    """orjson refuses ``1e999``; skimming skips it, and the resource is never read: the
    population's report is the one without that line (the in-memory reading stops)."""
    folder = with_line(population, tmp_path, "Observation.ndjson", _other_id_with(b'"x":1e999'))
    assert backtest_outcome(folder, pack, 0) == backtest_outcome(population, pack, 0)
    assert any(key.endswith("-copy") for key in skimmed)
    in_memory = backtest_outcome(folder, pack, IN_MEMORY)
    assert isinstance(in_memory, str) and "Observation.ndjson:2: not valid JSON" in in_memory


def test_a_second_version_of_a_key_whose_first_held_such_a_number_stops_the_backtest(
    population: Path, pack: Pack, tmp_path: Path
) -> None:
    """Read again to be compared, the skimmed line is refused as the in-memory reading
    refuses it, and the error names it."""
    folder = tmp_path / "changed"
    shutil.copytree(population, folder)
    path = folder / "Observation.ndjson"
    lines = path.read_bytes().splitlines()
    first = orjson.loads(lines[0])
    lines[0] = orjson.dumps(first)[:-1] + b',"x":1e999}'
    lines.insert(1, orjson.dumps({**first, "status": "amended"}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    found = backtest_outcome(folder, pack, 0)
    assert found == backtest_outcome(folder, pack, IN_MEMORY)
    assert "Observation.ndjson:1: not valid JSON" in found


def test_a_heads_codes_and_owners_are_what_the_chart_reads(pack: Pack) -> None:
    line = (
        b'{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p"},'
        b'"patient":{"reference":"Patient/q","display":"Q"},"code":{"coding":['
        b'{"system":"http://loinc.org","code":"8302-2","display":"Body Height"},'
        b'{"system":"http://loinc.org"},{"code":"x"},{"system":1,"code":"y"}],"text":"h"}}'
    )
    head = read_head(line)
    assert (head.resourceType, head.id) == ("Observation", "o")
    assert codes_of_head(head) == (("http://loinc.org", "8302-2"),)
    assert (head.subject.reference, head.patient.reference) == ("Patient/p", "Patient/q")
    keep = coded_in(vs for vs in pack.valuesets.values())
    assert keep(codes_of_head(head)) is keep.concept(orjson.loads(line)["code"])
    assert keep.keeps_coding("http://loinc.org", "8302-2") is keep(codes_of_head(head))


def test_a_line_without_an_id_is_named_by_the_command_without_a_traceback(
    population: Path, tmp_path: Path
) -> None:
    """A resource no chart can take (no id, no fullUrl in NDJSON) was a ChartError that
    left run_backtest as it was: the command printed a traceback."""
    folder = with_line(population, tmp_path, "Observation.ndjson", _other_id_with(b'"id":""'))
    proc = run_cli("backtest", str(folder), "--workers", "2")
    assert proc.returncode == 2, proc.stderr
    assert "Observation.ndjson:2: Observation has no id and no usable fullUrl" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "code",
    [
        b"",
        b',"code":null',
        b',"code":{"text":"h"}',
        b',"code":{"coding":[]}',
        b',"code":{"coding":null}',
        b',"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]}',
        b',"code":{"coding":[{"system":"http://loinc.org"}]}',
        b',"code":{"coding":[{"system":1,"code":"8302-2"}]}',
        b',"code":{"coding":[{"code":"x"},{"system":"s","code":"y"},{"system":"t","code":"z"}]}',
    ],
)
def test_a_heads_codes_are_coding_tuple_of_its_code(code: bytes) -> None:
    line = b'{"resourceType":"Observation","id":"o"' + code + b"}"
    assert codes_of_head(read_head(line)) == coding_tuple(orjson.loads(line).get("code"))


def test_heads_are_not_tracked_by_the_cyclic_collector() -> None:
    """A head (a tree of strings and structs, never a cycle) is left out of the collector's
    lists, which cost a tenth of the skim."""
    import gc

    line = (
        b'{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p"},'
        b'"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]}}'
    )
    head = read_head(line)
    assert codes_of_head(head) == (("http://loinc.org", "8302-2"),)
    assert not gc.is_tracked(head) and not gc.is_tracked(head.code)
