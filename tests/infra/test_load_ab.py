"""benchmarks/load_ab.py: paired rounds of two trees' load benchmark, and their summary."""

from __future__ import annotations

import pytest

from benchmarks import load_ab


def test_the_summary_pairs_each_round():
    found = load_ab.summary([(30.0, 29.0), (33.5, 34.0), (31.0, 29.5)])
    assert found["differences"] == [-1.0, 0.5, -1.5]
    assert found["median_difference"] == -1.0
    assert found["mean_difference"] == pytest.approx(-0.67)
    assert found["head_lower"] == 2
    assert found["base"] == [30.0, 33.5, 31.0] and found["head"] == [29.0, 34.0, 29.5]


def test_two_rounds_of_real_flows_are_paired(capsys):
    """This tree against itself, one physician at a time (load.py's smallest run, ~5 s each)."""
    found = load_ab.compare_trees(load_ab.REPO, "itself", 2, ["--levels", "1", "--quick"])
    assert found["rounds"] == 2 and len(found["differences"]) == 2
    assert all(figure > 0 for figure in found["base"] + found["head"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("round 1: itself ") and printed[1].startswith("round 2: ")
