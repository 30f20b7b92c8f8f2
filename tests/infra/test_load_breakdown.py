"""benchmarks/load_breakdown.py: each of Handoff's steps' CPU per flow, counted in its
gunicorn workers, and how the workers' counts add up."""

from __future__ import annotations

import json

from benchmarks import load_breakdown


def test_the_workers_counts_are_summed_per_flow(tmp_path):
    (tmp_path / "1.json").write_text(
        json.dumps({"counts": {"a:view": [4, 0.02], "a:inner": [8, 0.004]}, "missing": []})
    )
    (tmp_path / "2.json").write_text(
        json.dumps({"counts": {"a:view": [4, 0.02]}, "missing": ["b:gone"]})
    )
    found = load_breakdown.summed({"handoff_cpu_ms_per_flow": 10.0}, tmp_path, flows=4)
    assert [s["step"] for s in found["steps"]] == ["a:view", "a:inner"]
    view, inner = found["steps"]
    assert view == {
        "step": "a:view",
        "ms_per_flow": 10.0,
        "calls_per_flow": 2.0,
        "us_per_call": 5000,
        "share": 1.0,
    }
    assert inner["ms_per_flow"] == 1.0 and inner["calls_per_flow"] == 2.0
    assert inner["us_per_call"] == 500 and inner["share"] == 0.1
    assert found["missing"] == ["b:gone"]


def test_real_flows_are_broken_down_into_their_steps():
    """Eight flows, two at a time, against the sandbox under gunicorn (~30 s)."""
    args = load_breakdown.parse(["--level", "2", "--flows", "8"])
    found = load_breakdown.measure(args)
    assert found["load"]["errors"] == 0 and found["missing"] == []
    steps = {s["step"]: s for s in found["steps"]}
    # every step of the flow ran, as often as a flow runs it, counted after the warm-up
    assert steps["flask.app:Flask.wsgi_app"]["calls_per_flow"] == 5  # Handoff's 5 requests
    for once in ("complete_launch", "present", "record_shown", "deliver", "signed_page"):
        assert [s["calls_per_flow"] for k, s in steps.items() if k.endswith(f":{once}")] == [1]
    assert steps["smartapp.screen.service:find_visit"]["calls_per_flow"] == 3
    # steps nest: the views hold the services they call, the whole holds the requests
    whole = found["load"]["handoff_cpu_ms_per_flow"]
    views = steps["flask.app:Flask.dispatch_request"]["ms_per_flow"]
    assert steps["smartapp.launch.service:_exchange"]["ms_per_flow"] < views
    assert 0 < views < steps["flask.app:Flask.wsgi_app"]["ms_per_flow"] < whole
