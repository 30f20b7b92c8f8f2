"""The backtest's report made from each visit's summary (made where the visit was replayed).

The command line's run keeps no replayed visit: its workers send each visit's summary, the
report is counted from them and its JSON joins the entries they hold as text. These tests
hold that report, dict and text, to the one made from the replayed visits themselves, and
the text to what the standard encoder writes for the whole report (the documented form).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartapp.engine import Pack, load_pack
from smartapp.rulestools.backtest import Backtest, report, report_text, run_backtest
from smartapp.rulestools.backtest_summary import json_at, report_json

from .helpers import RULES
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
