"""The SVG chart geometry and the one-line event summaries of the console."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from smartapp.staff import dashboard
from smartapp.staff.console.summary import summary
from smartapp.staff.dashboard.charts import (
    bar_chart,
    column_chart,
    dashboard_charts,
    nice_scale,
)
from tests.console import logdata

pytestmark = pytest.mark.unit  # pure geometry and text: no server


def test_nice_scale():
    assert nice_scale(0) == (1.0, 1.0)
    assert nice_scale(3) == (3.0, 1.0)  # counts: never a step of 0.5
    assert nice_scale(58) == (60.0, 20.0)
    assert nice_scale(180) == (200.0, 50.0)


def test_column_chart_bars_stay_in_the_plot():
    chart = column_chart(
        "c",
        "Title",
        [("W18", "29 Apr"), ("W19", "06 May")],
        [("Shown", "s0", [7, 8]), ("Accepted", "s1", [4, None])],
    )
    assert len(chart["bars"]) == 3  # None draws nothing
    for bar in chart["bars"]:
        assert chart["left"] <= bar["x"] and bar["x"] + bar["w"] <= chart["right"]
        assert bar["y"] >= 0 and round(bar["y"] + bar["h"], 1) == chart["base"]
    tallest = max(chart["bars"], key=lambda b: b["h"])
    assert tallest["title"] == "W19 06 May: Shown 8"
    assert [t["label"] for t in chart["ticks"]] == ["0", "2", "4", "6", "8"]


def test_bar_chart_draws_no_bar_for_a_suppressed_figure():
    chart = bar_chart(
        "b",
        "Acceptance",
        [("Female", 0.71, "71%"), ("Male", None, "suppressed")],
        maximum=1.0,
        width=560,
        label_width=240,
    )
    female, male = chart["bars"]
    assert female["w"] == round((560 - 240 - 90) * 0.71, 1) and not female["suppressed"]
    assert male["suppressed"] and male["w"] == 0 and chart["track"]


def test_every_dashboard_chart_is_built():
    charts = dashboard_charts(dashboard.summarize(logdata.as_dicts()))
    assert set(charts) == {
        "weekly",
        "coach",
        "reasons",
        "rules",
        "times",
        "equity-race",
        "equity-ethnicity",
        "equity-sex",
        "equity-age_group",
    }
    assert [label["text"] for label in charts["weekly"]["labels"]] == ["W18", "W19", "W20"]


def event(type_: str, data: dict) -> SimpleNamespace:
    return SimpleNamespace(type=type_, data=data)


def test_summaries():
    assert (
        summary(
            event(
                "decision",
                {
                    "consult_mode": "telehealth",
                    "decisions": [
                        {"kind": "prc-consult", "accepted": True},
                        {"kind": "naloxone-kit", "accepted": False, "reason": "Other"},
                    ],
                },
            )
        )
        == "prc-consult accepted; naloxone-kit declined (Other) · consult telehealth"
    )
    assert (
        summary(
            event(
                "suggestions-shown",
                {
                    "pack": {"id": "p", "version": "2"},
                    "suggestions": [{"kind": "moud-buprenorphine", "variant": "home-start"}],
                },
            )
        )
        == "1 shown: moud-buprenorphine (home-start) · pack p 2"
    )
    assert summary(
        event("write-attempt", {"attempt": 2, "outcome": "queued", "error": "HTTP 503"})
    ) == ("attempt 2: queued · HTTP 503")
    assert summary(event("write-held", {"reason": "no scope"})) == "held: no scope"
    assert summary(event("coach-link", {"task_status": "completed", "program": "Bridge"})) == (
        "task completed · program Bridge"
    )
    assert (
        summary(event("audit-export", {"format": "csv", "events": 3, "from": None, "to": None}))
        == "csv, 3 events (… to …)"
    )
    assert summary(event("rules-reloaded", {"pack": "x" * 200})).endswith("…")
