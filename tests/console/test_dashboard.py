"""The dashboard's aggregation (`smartapp.staff.dashboard`), pure: figures worked out by hand from
`logdata.VISITS` (13 visits of 12 patients over ISO weeks 2024-W18..W20), small-cell
suppression, and that no patient identity leaves the module."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from smartapp.staff import dashboard
from tests.console import logdata

pytestmark = pytest.mark.unit  # the aggregation is pure: no server, no database

EVENTS = logdata.as_dicts()


@pytest.fixture(scope="module")
def figures() -> dict:
    return dashboard.summarize(EVENTS, programs=logdata.CATALOG_PROGRAMS)


def texts(dimension: dict) -> dict[str, list[str]]:
    """A suppressed equity table as the page shows it: value -> [visits, decided, accepted,
    declined, acceptance]."""
    return {
        row["value"]: [row[c]["text"] for c in dashboard.EQUITY_COLUMNS] + [row["acceptance_text"]]
        for row in dimension["rows"]
    }


def test_totals(figures):
    # 14 suggestions-shown events (one screen reloaded) make 13 visits; P11 was never signed.
    assert sum(1 for e in EVENTS if e["type"] == "suggestions-shown") == 14
    assert figures["totals"] == {
        "visits": 13,
        "patients": 12,
        "suggestions": 27,
        "signed_visits": 12,
        "decided": 26,
        "accepted": 19,
        "declined": 7,
        "acceptance": 19 / 26,
        "coach_referrals": 10,
        "contacted": 8,
        "linked": 6,
        "linked_rate": 0.6,
    }


def test_by_iso_week(figures):
    weeks = [
        {
            k: w[k]
            for k in (
                "week",
                "monday",
                "visits",
                "suggestions",
                "accepted",
                "declined",
                "coach_referrals",
                "contacted",
                "linked",
                "reasons",
            )
        }
        for w in figures["weeks"]
    ]
    assert weeks == [
        {
            "week": "2024-W18",
            "monday": "2024-04-29",
            "visits": 3,
            "suggestions": 7,
            "accepted": 4,
            "declined": 3,
            "coach_referrals": 2,
            "contacted": 2,
            "linked": 1,
            "reasons": {"Patient declined": 2, "Already in treatment elsewhere": 1},
        },
        {
            "week": "2024-W19",
            "monday": "2024-05-06",
            "visits": 4,
            "suggestions": 8,
            "accepted": 6,
            "declined": 2,
            "coach_referrals": 3,
            "contacted": 3,
            "linked": 2,
            "reasons": {"Clinically inappropriate now": 1, "Coach unavailable": 1},
        },
        {
            "week": "2024-W20",
            "monday": "2024-05-13",
            "visits": 6,
            "suggestions": 12,
            "accepted": 9,
            "declined": 2,
            "coach_referrals": 5,
            "contacted": 3,
            "linked": 3,
            "reasons": {"Already in treatment elsewhere": 1, "Other": 1},
        },
    ]
    assert [w["acceptance"] for w in figures["weeks"]] == [4 / 7, 6 / 8, 9 / 11]


def test_weeks_without_visits_are_kept():
    early = [e for e in EVENTS if e["at"] < datetime(2024, 5, 6, tzinfo=UTC)]
    late = [e for e in EVENTS if e["at"] >= datetime(2024, 5, 13, tzinfo=UTC)]
    weeks = dashboard.summarize(early + late)["weeks"]
    assert [w["week"] for w in weeks] == ["2024-W18", "2024-W19", "2024-W20"]
    assert weeks[1]["visits"] == 0 and weeks[1]["acceptance"] is None


def test_decline_reasons_suggestions_and_rules(figures):
    assert figures["decline_reasons"] == [
        {"reason": "Already in treatment elsewhere", "count": 2},
        {"reason": "Patient declined", "count": 2},
        {"reason": "Clinically inappropriate now", "count": 1},
        {"reason": "Coach unavailable", "count": 1},
        {"reason": "Other", "count": 1},
    ]
    assert [(k["kind"], k["shown"], k["accepted"], k["declined"]) for k in figures["kinds"]] == [
        ("prc-consult", 13, 10, 2),
        ("naloxone-kit", 7, 5, 2),
        ("moud-buprenorphine", 6, 3, 3),
        ("moud-continue", 1, 1, 0),
    ]
    assert figures["rules"] == [
        {
            "rule": "prc-consult-sud-adult",
            "kind": "prc-consult",
            "fired": 13,
            "accepted": 10,
            "declined": 2,
        },
        {
            "rule": "naloxone-kit-at-risk",
            "kind": "naloxone-kit",
            "fired": 7,
            "accepted": 5,
            "declined": 2,
        },
        {
            "rule": "moud-buprenorphine-oud",
            "kind": "moud-buprenorphine",
            "fired": 6,
            "accepted": 3,
            "declined": 3,
        },
        {
            "rule": "moud-continue-on-moud",
            "kind": "moud-continue",
            "fired": 1,
            "accepted": 1,
            "declined": 0,
        },
    ]


def test_time_from_arrival(figures):
    times = figures["times"]
    # Referral (decision) minutes after arrival, for the 10 coach referrals less P12 (its chart
    # gave no encounter start): 20 30 45 | 60 75 90 | 120 150 200. P01's first arrival is
    # logged as 04:00-04:00 (08:00Z) and P10's only in the decision's copy of the screen.
    assert times["referral"] == {
        "n": 9,
        "suppressed": False,
        "median": 75,
        "p25": 45,
        "p75": 120,
        "buckets": [
            {"label": label, "count": n}
            for label, n in zip(
                ("< 1 h", "1–2 h", "2–4 h", "4–8 h", "8–24 h", "1–3 days", "3 days +"),
                (3, 3, 3, 0, 0, 0, 0),
                strict=True,
            )
        ],
    }
    # First coach contact: 40 45 | 90 | 150 180 | 300 360 | 1560 (26 h, the next day).
    contact = times["contact"]
    assert (contact["n"], contact["median"], contact["p25"], contact["p75"]) == (8, 165, 78.75, 315)
    assert [b["count"] for b in contact["buckets"]] == [2, 1, 2, 2, 0, 1, 0]
    assert (times["coach_referrals"], times["no_arrival_time"], times["not_contacted"]) == (
        10,
        1,
        2,
    )
    assert dashboard.format_minutes(contact["median"]) == "2 h 45 min"
    assert dashboard.format_minutes(1560) == "1 d 2 h"


def test_time_summaries_need_enough_referrals():
    times = dashboard.summarize(EVENTS, min_cell=10)["times"]
    assert times["referral"]["n"] == 9 and times["referral"]["suppressed"]
    assert times["referral"]["median"] is None
    assert {b["count"] for b in times["referral"]["buckets"]} == {None}


def test_period_counts_visits_first_shown_in_it():
    # ISO week 19 only: its coach contacts count even when they fall after the period
    # (P07 is contacted 26 h after arrival, on the Sunday evening after the end used here).
    week = dashboard.summarize(
        EVENTS,
        start=datetime(2024, 5, 6, tzinfo=UTC),
        end=datetime(2024, 5, 12, 12, tzinfo=UTC),
    )
    assert [w["week"] for w in week["weeks"]] == ["2024-W19"]
    totals = week["totals"]
    assert (totals["visits"], totals["coach_referrals"], totals["contacted"]) == (4, 3, 3)


def test_linked_programs_are_suppressed(figures):
    at_5 = [(p["program"], p["linked"]["text"]) for p in figures["programs"]]
    assert at_5 == [("Bridge Clinic", "<5"), ("Harbor Recovery", "<5"), ("Program not named", "<5")]
    at_3 = dashboard.summarize(EVENTS, min_cell=3, programs=logdata.CATALOG_PROGRAMS)["programs"]
    assert [(p["program"], p["linked"]["text"]) for p in at_3] == [
        ("Bridge Clinic", "3"),
        ("Harbor Recovery", "<3"),
        ("Program not named", "<3"),
    ]


def test_equity_at_the_default_threshold(figures):
    by_name = {d["name"]: texts(d) for d in figures["equity"]}
    assert by_name["sex"] == {
        # female: 7 visits of 6 patients; accepted by 4 patients, declined by 3: both hidden.
        "Female": ["7", "14", "<5", "<5", "suppressed"],
        # male visits (5 patients) would give away "Not recorded" (1) from the total: hidden.
        "Male": ["*", "<5", "<5", "<5", "suppressed"],
        "Not recorded": ["<5", "<5", "<5", "<5", "suppressed"],
    }
    assert by_name["race"] == {
        # White declines come from 3 patients: accepted is hidden too (decided is shown).
        "White": ["8", "18", "*", "<5", "suppressed"],
        "Black or African American": ["<5", "<5", "<5", "<5", "suppressed"],
        # A visible 0 beside a hidden total would say every Asian patient accepted.
        "Asian": ["<5", "<5", "<5", "*", "suppressed"],
        "Not recorded": ["<5", "<5", "<5", "<5", "suppressed"],
    }
    assert by_name["ethnicity"]["Not Hispanic or Latino"] == ["11", "21", "15", "6", "71%"]
    assert list(by_name["age_group"]) == ["18-24", "25-34", "35-44", "45-54", "55-64"]
    # No suppressed figure carries its number out of the module.
    for dimension in figures["equity"]:
        for row in dimension["rows"]:
            for column in dashboard.EQUITY_COLUMNS:
                assert (row[column]["value"] is None) == row[column]["suppressed"]


def test_equity_with_a_lower_threshold():
    figures = dashboard.summarize(EVENTS, min_cell=3)
    by_name = {d["name"]: texts(d) for d in figures["equity"]}
    assert by_name["sex"] == {
        "Female": ["7", "14", "10", "4", "71%"],
        "Male": ["*", "*", "*", "<3", "suppressed"],
        "Not recorded": ["<3", "<3", "<3", "<3", "suppressed"],
    }
    assert by_name["race"]["White"] == ["8", "18", "15", "3", "83%"]
    assert by_name["age_group"]["25-34"] == ["5", "11", "8", "3", "73%"]


def test_suppress_complements_until_nothing_can_be_worked_out():
    def fig(n: int, patients: int) -> tuple[int, set]:
        return n, set(range(patients))

    table = [
        {"decided": fig(20, 20), "accepted": fig(18, 18), "declined": fig(2, 2)},
        {"decided": fig(9, 9), "accepted": fig(6, 6), "declined": fig(3, 3)},
        {"decided": fig(12, 12), "accepted": fig(6, 6), "declined": fig(6, 6)},
        {"decided": fig(0, 0), "accepted": fig(0, 0), "declined": fig(0, 0)},
    ]
    cells = dashboard.suppress(
        table,
        ("decided", "accepted", "declined"),
        5,
        row_sums=(("decided", ("accepted", "declined")),),
    )
    shown = [[c["text"] for c in row.values()] for row in cells]
    assert shown == [
        ["20", "*", "<5"],  # declined 2 is small; accepted would give it away
        ["9", "*", "<5"],
        ["12", "6", "6"],  # two hidden declines per column already: nothing more to hide
        ["0", "0", "0"],
    ]
    # Column 'accepted': two hidden (rows 0, 1); column 'declined' too: neither recoverable.
    assert cells[0]["accepted"] == {"value": None, "text": "*", "suppressed": True}


def test_a_single_hidden_category_takes_the_next_smallest_with_it():
    cells = dashboard.suppress(
        [
            {"n": (30, set(range(30)))},
            {"n": (6, set(range(6)))},
            {"n": (2, {1, 2})},
            {"n": (9, set(range(9)))},
        ],
        ("n",),
        5,
    )
    assert [c["n"]["text"] for c in cells] == ["30", "*", "<5", "9"]


def test_no_patient_identity_leaves_the_module(figures):
    out = json.dumps(figures, default=str)
    for secret in (
        *logdata.PATIENT_IDS,
        *logdata.ENCOUNTER_IDS,
        *logdata.NAMES,
        "MRN-77",
        "has a kit at home",
        "already with Bridge",
        "met in bay 4",
        "1990-01-01",
        logdata.DR_A,
        logdata.COACH,
        "ref-",
    ):
        assert secret not in out


def test_empty_log():
    figures = dashboard.summarize([])
    assert figures["totals"]["visits"] == 0 and figures["weeks"] == []
    assert figures["times"]["referral"]["median"] is None
    assert all(
        row["visits"]["text"] == "0" or not dim["rows"]
        for dim in figures["equity"]
        for row in dim["rows"]
    )


def test_helpers():
    assert dashboard.iso_week(datetime(2024, 12, 30, tzinfo=UTC)) == "2025-W01"
    assert dashboard.weeks_between("2024-W52", "2025-W02") == ["2024-W52", "2025-W01", "2025-W02"]
    assert dashboard.arrival_time("2024-05-01") is None  # a date alone has no minutes
    assert dashboard.arrival_time("2024-05-01T10:00:00+02:00") == datetime(
        2024, 5, 1, 8, tzinfo=UTC
    )
    assert dashboard.arrival_time("garbage-but-long") is None
    with pytest.raises(ValueError):
        dashboard.summarize([], min_cell=0)
