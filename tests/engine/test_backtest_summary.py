"""The backtest's report made from each visit's summary (made where the visit was replayed).

The command line's run keeps no replayed visit: its workers send each visit's summary, the
report is counted from them and its JSON joins the entries they hold as text. These tests
hold that report, dict and text, to the one made from the replayed visits themselves, and
the text to what the standard encoder writes for the whole report (the documented form).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from random import Random

import pytest

from smartapp.engine import Pack, load_pack
from smartapp.rulestools import backtest_report
from smartapp.rulestools.backtest import (
    Backtest,
    report,
    report_parts,
    report_text,
    run_backtest,
)
from smartapp.rulestools.backtest_report import _kind_counts, pack_report
from smartapp.rulestools.backtest_summary import VisitSummary, json_at, report_json

from .helpers import REPO, RULES, SYNTHEA, run_cli
from .test_backtest import cows_pack, write_bundles, write_ndjson


def _both(folder: Path, packs: list[Pack], workers: int, in_memory: int) -> tuple[Backtest, ...]:
    kept = run_backtest(folder, packs, workers, in_memory_bytes=in_memory)
    summed = run_backtest(folder, packs, workers, in_memory_bytes=in_memory, keep_visits=False)
    return kept, summed


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("in_memory", [0, 1 << 30], ids=["population", "in-memory"])
def test_summaries_report_what_the_replayed_visits_report(
    tmp_path: Path, pack: Pack, workers: int, in_memory: int
) -> None:
    folder = write_bundles(tmp_path / "charts")
    write_ndjson(folder / "more")  # the same patients again, as NDJSON
    other = load_pack(cows_pack(tmp_path, 5), RULES / "valuesets")  # a1 differs
    kept, summed = _both(folder, [pack, other], workers, in_memory)
    assert summed.visits == [] and summed.summaries is not None
    assert len(summed.summaries) == len(kept.visits) == 14
    expected = report(kept)
    assert len(expected["compare"]["differences"]) == 2  # a1, in the bundles and the NDJSON
    assert report(summed) == expected
    text = report_text(summed)
    assert text == report_text(kept) == json.dumps(expected, indent=2)
    assert json.loads(text) == expected


@pytest.mark.parametrize("part_entries", [1, 3, 14, 15])
def test_the_report_in_parts_is_the_report_text_whatever_the_parts_size(
    tmp_path: Path, pack: Pack, part_entries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line writes the report in parts (``report_parts``): the lists' entries
    joined a part at a time, the separators between parts as between entries."""
    folder = write_bundles(tmp_path / "charts")
    write_ndjson(folder / "more")
    other = load_pack(cows_pack(tmp_path, 5), RULES / "valuesets")
    kept, summed = _both(folder, [pack, other], 1, 1 << 30)
    monkeypatch.setattr(backtest_report, "PART_ENTRIES", part_entries)
    parts = list(report_parts(summed))
    assert "".join(parts) == json.dumps(report(kept), indent=2)
    # the frame's three pieces; each list's opening, its entries' parts and its closing
    chunks = -(-14 // part_entries) + -(-2 // part_entries)
    assert len(parts) == 3 + 4 + chunks


def test_the_command_writes_the_report_in_parts_with_a_newline(tmp_path: Path) -> None:
    folder = write_bundles(tmp_path / "charts")
    proc = run_cli("backtest", str(folder), "--json", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("}\n") and not proc.stdout.endswith("\n\n")
    found = json.loads(proc.stdout)
    assert found["visits"] == len(found["per_visit"]) == 7


def test_a_reader_that_stops_early_ends_the_command_without_a_traceback() -> None:
    """``... --json | head``: the reader closes the pipe while the report (more than a pipe's
    buffer: the Synthea folder's 100 patients) is being written; the command ends with
    status 1 and no traceback (click's standalone mode answers EPIPE)."""
    command = [sys.executable, "-m", "smartapp.rulestools.cli", "backtest", str(SYNTHEA)]
    proc = subprocess.Popen(
        [*command, "--json", "--workers", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b"{")
    proc.stdout.close()
    errors = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in errors and "Exception ignored" not in errors, errors


def test_text_outside_ascii_is_the_standard_encoders(tmp_path: Path, pack: Pack) -> None:
    """A patient id outside ASCII (its entries: written by the standard encoder, escaped)
    and a folder name outside ASCII (the rest of the report likewise): the same text as the
    standard encoder's for the whole report."""
    folder = write_bundles(tmp_path / "Médecins")
    for path in folder.glob("*.json"):
        text = path.read_text()
        path.write_text(text.replace('pa"', 'p\\u00e4"'))
    other = load_pack(cows_pack(tmp_path, 5), RULES / "valuesets")
    kept, summed = _both(folder, [pack, other], 2, 1 << 30)
    expected = report(kept)
    assert "pä" in {v["patient"] for v in expected["per_visit"]}
    assert expected["compare"]["differences"][0]["patient"] == "pä"
    assert report_text(summed) == json.dumps(expected, indent=2)
    assert report(summed) == expected


def test_no_visit_gives_empty_lists(tmp_path: Path, pack: Pack) -> None:
    folder = tmp_path / "none"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text('{"resourceType": "Patient", "id": "x"}\n')
    kept, summed = _both(folder, [pack, pack], 1, 1 << 30)
    expected = report(kept)
    assert expected["per_visit"] == [] and expected["compare"]["differences"] == []
    assert report_text(summed) == json.dumps(expected, indent=2)


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, {"b": "c"}], "d": {}, "e": []},
        {"é": ["ü", None, True]},
        {"control": "\x01\x7f"},
        [],
    ],
)
def test_json_at_a_depth_is_the_standard_encoders_text_there(value: object) -> None:
    whole = {"outer": {"list": [value]}}
    inner = json_at(value, 3)
    assert json.dumps(whole, indent=2) == (
        '{\n  "outer": {\n    "list": [\n      ' + inner + "\n    ]\n  }\n}"
    )
    assert report_json(value) == json.dumps(value, indent=2)


def _counted_one_by_one(pack: Pack, visits: list[VisitSummary]) -> dict[str, object]:
    """The counts as the report made them before it counted alike visits together: visit
    by visit, names entering each dict in the order the visits bring them."""

    def zeroed() -> dict[str, dict[str, object]]:
        return _kind_counts(pack)  # (the zeroed counts are not what is tested)

    def add(counts: dict, kind: str, variants: tuple, cautions: tuple) -> None:
        found = counts.setdefault(kind, {"visits": 0, "variants": {}, "cautions": {}})
        found["visits"] += 1
        for name in variants:
            found["variants"][name] = found["variants"].get(name, 0) + 1
        for name in cautions:
            found["cautions"][name] = found["cautions"].get(name, 0) + 1

    overall, by_year, during, with_any, during_any = zeroed(), {}, zeroed(), 0, 0
    for visit in visits:
        year = by_year.setdefault(visit.year, {"visits_with_suggestions": 0, "counts": zeroed()})
        for kind, variant, cautions in visit.at_replay[0]:
            for counts in (overall, year["counts"]):
                add(counts, kind, () if variant is None else (variant,), cautions)
        with_any += bool(visit.at_replay[0])
        year["visits_with_suggestions"] += bool(visit.at_replay[0])
        during_any += bool(visit.during[0])
        for kind, variants, cautions in visit.during[0]:
            add(during, kind, variants, cautions)
    return {
        "visits_with_suggestions": with_any,
        "counts": overall,
        "by_year": {str(y): by_year[y] for y in sorted(by_year, key=str)},
        "during": {"visits_with_suggestions": during_any, "counts": during},
    }


def test_alike_visits_counted_together_count_as_one_by_one(pack: Pack) -> None:
    """The report counts each distinct outcome once, times its visits: the same figures,
    and the same order of names (undeclared kinds, variants and cautions come in the order
    the visits bring them, which the JSON keeps), as counting visit by visit."""
    kinds = [rule.kind for rule in pack.rules] + ["undeclared-kind"]
    random = Random(15)
    outcomes = [()] + [
        tuple(
            (
                kind,
                random.choice([None, "v-new-a", "v-new-b"]),
                tuple(random.sample(["c1", "c2"], 1)),
            )
            for kind in random.sample(kinds, random.randint(1, 2))
        )
        for _ in range(6)
    ]
    outcomes.append((("undeclared-kind", "v-new-c", ("c3",)), (kinds[0], "v-new-c", ())))
    visits = []
    for n in range(400):
        found = random.choice(outcomes)
        during = tuple((kind, (v,) if v else (), c) for kind, v, c in found)
        time = datetime(2010 + random.randint(0, 12), 1, 1, tzinfo=UTC)
        order = (time, f"p{n}", f"Encounter/e{n}")
        visits.append(VisitSummary(order, f"p{n}", time.year, (found,), (during,), "{}", None))
    result = Backtest(Path("x"), [pack], 0, 1, 1, 400, 0, [], summaries=visits)
    made = pack_report(result, 0)
    expected = _counted_one_by_one(pack, visits)
    assert {k: made[k] for k in expected} == expected
    assert "undeclared-kind" in made["counts"] and "v-new-b" in json.dumps(made)
    assert json.dumps({k: made[k] for k in expected}) == json.dumps(expected)  # names' order
