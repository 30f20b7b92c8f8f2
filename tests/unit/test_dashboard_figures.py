"""The dashboard's figures as pure functions (`smartapp.staff.dashboard`), no server, no
database: each test builds the few referral-log events it needs (as the dashboard reads them)
and checks figures worked out by hand.

Covered: weekly acceptance, decline reasons, times from ED arrival to referral and to contact,
linked programs (catalog names only, the rest "Other"), per-rule and per-kind counts, equity
splits with small-cell and complementary suppression, and that only visits with a suggestion
shown are counted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from smartapp.staff import dashboard
from smartapp.staff.dashboard.groups import catalog_program
from smartapp.staff.dashboard.suppression import suppress

pytestmark = pytest.mark.unit

ISS = "https://ehr.test/fhir"
RULES = {
    "prc-consult": "prc-consult-sud-adult",
    "naloxone-kit": "naloxone-kit-at-risk",
    "moud-buprenorphine": "moud-buprenorphine-oud",
}
MONDAY_W18 = datetime(2024, 4, 29, 9, 0, tzinfo=UTC)  # ISO week 2024-W18


def shown(
    patient: str,
    at: datetime | str,
    kinds: list[str],
    *,
    arrival: str | None = None,
    demographics: dict | None = None,
) -> dict:
    """A `suggestions-shown` event for the patient's ED encounter."""
    return {
        "seq": 0,
        "at": at,
        "type": "suggestions-shown",
        "iss": ISS,
        "patient_id": patient,
        "encounter_id": f"enc-{patient}",
        "data": {
            "suggestions": [{"kind": k, "rule": RULES[k]} for k in kinds],
            "encounter_start": arrival,
            "demographics": demographics or {},
        },
    }


def decided(
    patient: str,
    at: datetime,
    items: list[tuple[str, bool, str | None]],
    *,
    referral: str | None = None,
    shown_arrival: str | None = None,
) -> dict:
    """A `decision` event: (kind, accepted, reason) per item."""
    data: dict = {
        "decisions": [{"kind": k, "accepted": ok, "reason": why} for k, ok, why in items],
        "referral": referral,
    }
    if shown_arrival:
        data["shown"] = {"encounter": {"start": shown_arrival}}
    return {
        "seq": 0,
        "at": at,
        "type": "decision",
        "iss": ISS,
        "patient_id": patient,
        "encounter_id": f"enc-{patient}",
        "data": data,
    }


def coach(type_: str, referral: str, at: datetime, **data: str) -> dict:
    """A coach event, found by its referral (no patient key needed)."""
    return {
        "seq": 0,
        "at": at,
        "type": type_,
        "iss": None,
        "patient_id": None,
        "encounter_id": None,
        "data": {"referral": referral, **data},
    }


def coach_visit(
    patient: str, at: datetime, *, accepted: bool = True, arrival: str | None = None
) -> list[dict]:
    """A visit with the coach suggestion shown and decided (referral id `ref-<patient>`)."""
    return [
        shown(patient, at, ["prc-consult"], arrival=arrival),
        decided(
            patient,
            at + timedelta(minutes=5),
            [("prc-consult", accepted, None if accepted else "Patient declined")],
            referral=f"ref-{patient}",
        ),
    ]


# -- visits: only those with a suggestion shown ------------------------------------------------


def test_only_visits_with_a_suggestion_shown_are_counted():
    at = MONDAY_W18
    events = [
        # P1's screen reloaded: one visit, its kinds counted once each.
        shown("P1", at, ["prc-consult"]),
        shown("P1", at + timedelta(minutes=2), ["prc-consult", "naloxone-kit"]),
        decided(
            "P1",
            at + timedelta(minutes=9),
            [("prc-consult", True, None), ("naloxone-kit", False, "Has a kit")],
        ),
        # A second decision for the same visit is not counted: the first one is.
        decided("P1", at + timedelta(minutes=20), [("prc-consult", False, "Changed mind")]),
        # The rules suggested nothing for P2: not a visit, and its decision is not counted.
        shown("P2", at, []),
        decided("P2", at + timedelta(minutes=5), [("naloxone-kit", True, None)]),
        # P3 was never shown anything in this log.
        decided("P3", at + timedelta(minutes=5), [("naloxone-kit", True, None)]),
    ]
    totals = dashboard.summarize(events)["totals"]
    assert totals == {
        "visits": 1,
        "patients": 1,
        "suggestions": 2,
        "signed_visits": 1,
        "decided": 2,
        "accepted": 1,
        "declined": 1,
        "acceptance": 0.5,
        "coach_referrals": 1,
        "contacted": 0,
        "linked": 0,
        "linked_rate": 0.0,
    }


def test_period_counts_visits_by_when_suggestions_were_first_shown():
    events = [
        *coach_visit("P1", MONDAY_W18),
        *coach_visit("P2", MONDAY_W18 + timedelta(days=7)),
    ]
    start = MONDAY_W18 + timedelta(days=7)
    figures = dashboard.summarize(events, start=start, end=start + timedelta(days=7))
    assert figures["totals"]["visits"] == 1
    assert [w["week"] for w in figures["weeks"]] == ["2024-W19"]
    with pytest.raises(ValueError):
        dashboard.summarize(events, min_cell=0)


def test_no_events_no_figures():
    figures = dashboard.summarize([])
    assert figures["weeks"] == [] and figures["decline_reasons"] == []
    assert figures["totals"]["visits"] == 0 and figures["totals"]["acceptance"] is None


# -- weekly acceptance and decline reasons ----------------------------------------------------


def test_weekly_acceptance_with_a_week_without_visits():
    w18, w20 = MONDAY_W18, MONDAY_W18 + timedelta(days=16)  # Monday 29 Apr, Wednesday 15 May
    events = [
        shown("P1", w18, ["prc-consult", "naloxone-kit"]),
        decided(
            "P1",
            w18 + timedelta(hours=1),
            [("prc-consult", True, None), ("naloxone-kit", False, "Patient declined")],
        ),
        # Shown in W18, decided in W19: counts with the week of the visit.
        shown("P2", (w18 + timedelta(days=2)).isoformat().replace("+00:00", "Z"), ["naloxone-kit"]),
        decided("P2", w18 + timedelta(days=8), [("naloxone-kit", True, None)]),
        shown("P3", w20, ["prc-consult"]),
        decided("P3", w20 + timedelta(hours=1), [("prc-consult", False, None)]),
    ]
    weeks = dashboard.summarize(events)["weeks"]
    assert [(w["week"], w["monday"]) for w in weeks] == [
        ("2024-W18", "2024-04-29"),
        ("2024-W19", "2024-05-06"),
        ("2024-W20", "2024-05-13"),
    ]
    assert [(w["visits"], w["suggestions"], w["accepted"], w["declined"]) for w in weeks] == [
        (2, 3, 2, 1),
        (0, 0, 0, 0),
        (1, 1, 0, 1),
    ]
    assert [w["acceptance"] for w in weeks] == [2 / 3, None, 0.0]
    assert [w["reasons"] for w in weeks] == [
        {"Patient declined": 1},
        {},
        {"No reason recorded": 1},
    ]
    assert [w["coach_referrals"] for w in weeks] == [1, 0, 0]


def test_decline_reasons_most_frequent_first_ties_by_name():
    events = []
    reasons = [
        "Patient declined",
        "Coach unavailable",
        "Patient declined",
        None,
        "Coach unavailable",
        "Already in treatment elsewhere",
    ]
    for i, reason in enumerate(reasons):
        patient = f"P{i}"
        events += [
            shown(patient, MONDAY_W18 + timedelta(hours=i), ["naloxone-kit"]),
            decided(
                patient,
                MONDAY_W18 + timedelta(hours=i, minutes=5),
                [("naloxone-kit", False, reason)],
            ),
        ]
    assert dashboard.summarize(events)["decline_reasons"] == [
        {"reason": "Coach unavailable", "count": 2},
        {"reason": "Patient declined", "count": 2},
        {"reason": "Already in treatment elsewhere", "count": 1},
        {"reason": "No reason recorded", "count": 1},
    ]


# -- per rule and per kind --------------------------------------------------------------------


def test_a_rule_fires_once_per_visit_and_counts_its_decisions():
    at = MONDAY_W18
    events = [
        shown("P1", at, ["prc-consult", "naloxone-kit"]),
        decided(
            "P1",
            at + timedelta(minutes=5),
            [("prc-consult", True, None), ("naloxone-kit", False, "Has a kit")],
        ),
        shown("P2", at, ["prc-consult"]),
        shown("P2", at + timedelta(minutes=1), ["prc-consult"]),  # reloaded
        decided("P2", at + timedelta(minutes=5), [("prc-consult", True, None)]),
        shown("P3", at, ["naloxone-kit"]),  # never signed
    ]
    figures = dashboard.summarize(events)
    assert figures["rules"] == [
        {
            "rule": "naloxone-kit-at-risk",
            "kind": "naloxone-kit",
            "fired": 2,
            "accepted": 0,
            "declined": 1,
        },
        {
            "rule": "prc-consult-sud-adult",
            "kind": "prc-consult",
            "fired": 2,
            "accepted": 2,
            "declined": 0,
        },
    ]
    assert figures["kinds"] == [
        {"kind": "naloxone-kit", "shown": 2, "accepted": 0, "declined": 1, "acceptance": 0.0},
        {"kind": "prc-consult", "shown": 2, "accepted": 2, "declined": 0, "acceptance": 1.0},
    ]


# -- times from ED arrival --------------------------------------------------------------------


def timed_events() -> list[dict]:
    """Four coach referrals: 90 and 30 min to referral (one arrival read from the decision's
    copy of what was shown), one arrival given as a date only, one referral before arrival."""
    day = datetime(2024, 5, 1, tzinfo=UTC)
    return [
        shown("A", day + timedelta(hours=9), ["prc-consult"], arrival="2024-05-01T08:00:00Z"),
        decided(
            "A",
            day + timedelta(hours=9, minutes=30),
            [("prc-consult", True, None)],
            referral="ref-A",
        ),
        coach("coach-contact", "ref-A", day + timedelta(hours=12), task_status="in-progress"),
        coach("coach-contact", "ref-A", day + timedelta(hours=11), task_status="in-progress"),
        shown("B", day + timedelta(hours=10, minutes=15), ["prc-consult"]),
        decided(
            "B",
            day + timedelta(hours=10, minutes=30),
            [("prc-consult", True, None)],
            referral="ref-B",
            shown_arrival="2024-05-01T10:00:00+00:00",
        ),
        shown("C", day + timedelta(hours=10), ["prc-consult"], arrival="2024-05-01"),
        decided("C", day + timedelta(hours=11), [("prc-consult", True, None)], referral="ref-C"),
        shown("D", day + timedelta(hours=10), ["prc-consult"], arrival="2024-05-01T12:00:00Z"),
        decided("D", day + timedelta(hours=11), [("prc-consult", True, None)], referral="ref-D"),
        coach("coach-contact", "ref-D", day + timedelta(hours=13), task_status="in-progress"),
    ]


def test_times_to_referral_and_to_contact():
    times = dashboard.summarize(timed_events(), min_cell=2)["times"]
    assert times["coach_referrals"] == 4
    assert times["no_arrival_time"] == 1  # C: a date without a time of day
    assert times["not_contacted"] == 2  # B and C
    assert times["negative"] == 1  # D was referred an hour before its recorded arrival
    referral = times["referral"]  # A: 90 min, B: 30 min
    assert (referral["n"], referral["median"], referral["p25"], referral["p75"]) == (
        2,
        60.0,
        45.0,
        75.0,
    )
    assert [b["count"] for b in referral["buckets"]] == [1, 1, 0, 0, 0, 0, 0]
    contact = times["contact"]  # A: first contact at 11:00 (180 min), D: 60 min
    assert (contact["n"], contact["median"]) == (2, 120.0)
    assert [b["count"] for b in contact["buckets"]] == [0, 1, 1, 0, 0, 0, 0]
    assert dashboard.format_minutes(referral["median"]) == "1 h"


def test_times_are_summarised_only_over_min_cell_referrals():
    referral = dashboard.summarize(timed_events(), min_cell=5)["times"]["referral"]
    assert referral["n"] == 2 and referral["suppressed"] is True
    assert referral["median"] is None and referral["p25"] is None and referral["p75"] is None
    assert {b["count"] for b in referral["buckets"]} == {None}
    empty = dashboard.distribution([], 5)
    assert empty["suppressed"] is False and empty["n"] == 0


# -- linked programs --------------------------------------------------------------------------

CATALOG = ["Bridge Clinic", "Bridge Clinic East", "Harbor Recovery"]


def linked_events() -> list[dict]:
    at = MONDAY_W18
    picks = {
        "L1": ("coach-link", {"program": "Bridge Clinic East (555-0101)"}),
        "L2": ("coach-link", {"program": "bridge clinic"}),
        "L3": (
            "coach-close",
            {"program": "Harbor Recovery (555-0199)", "reason": "Linked to a program"},
        ),
        "L4": ("coach-link", {"program": "My cousin's group, call Ann 555-0123"}),
        "L5": ("coach-link", {"program": ""}),
    }
    events = []
    for i, (patient, (type_, data)) in enumerate(picks.items()):
        events += coach_visit(patient, at + timedelta(hours=i))
        events.append(coach(type_, f"ref-{patient}", at + timedelta(days=1, hours=i), **data))
    # Closed for another reason: not linked.
    events += coach_visit("L6", at)
    events.append(coach("coach-close", "ref-L6", at + timedelta(days=1), reason="No answer"))
    # Linked although the coach suggestion was declined: not a coach referral, not counted.
    events += coach_visit("L7", at, accepted=False)
    events.append(coach("coach-link", "ref-L7", at + timedelta(days=1), program="Bridge Clinic"))
    return events


def test_linked_programs_are_catalog_names_or_other():
    figures = dashboard.summarize(linked_events(), min_cell=1, programs=CATALOG)
    assert [(p["program"], p["linked"]["text"]) for p in figures["programs"]] == [
        ("Bridge Clinic", "1"),
        ("Bridge Clinic East", "1"),
        ("Harbor Recovery", "1"),
        ("Other", "1"),
        ("Program not named", "1"),
    ]
    assert figures["totals"]["linked"] == 5 and figures["totals"]["coach_referrals"] == 6
    text = json.dumps(figures)
    assert "cousin" not in text and "555-0123" not in text and "555-0101" not in text


def test_without_a_catalog_every_named_program_is_other():
    figures = dashboard.summarize(linked_events(), min_cell=1)
    assert [(p["program"], p["linked"]["value"]) for p in figures["programs"]] == [
        ("Other", 4),
        ("Program not named", 1),
    ]


def test_linked_programs_small_cells_are_suppressed():
    programs = dashboard.summarize(linked_events(), programs=CATALOG)["programs"]
    assert {p["linked"]["text"] for p in programs} == {"<5"}
    assert {p["linked"]["value"] for p in programs} == {None}


def test_catalog_program_matching():
    ordered = sorted(CATALOG, key=len, reverse=True)
    assert catalog_program("Bridge Clinic East (555-0101)", ordered) == "Bridge Clinic East"
    assert catalog_program("  HARBOR RECOVERY ", ordered) == "Harbor Recovery"
    assert catalog_program("Harbor Recovery Annex", ordered) == "Other"
    assert catalog_program(None, ordered) == "Program not named"


# -- equity splits: small-cell and complementary suppression ----------------------------------


def figure(count: int) -> tuple[int, set]:
    """`count` items of as many distinct patients."""
    return count, {("iss", f"p{i}") for i in range(count)}


def test_suppress_hides_small_cells_and_their_complements():
    table = [
        {
            "visits": figure(20),
            "decided": figure(20),
            "accepted": figure(12),
            "declined": figure(8),
        },
        {"visits": figure(3), "decided": figure(3), "accepted": figure(2), "declined": figure(1)},
        {"visits": figure(6), "decided": figure(6), "accepted": figure(6), "declined": figure(0)},
    ]
    cells = suppress(
        table,
        dashboard.EQUITY_COLUMNS,
        5,
        row_sums=(("decided", ("accepted", "declined")),),
    )
    shown = [[row[c]["text"] for c in dashboard.EQUITY_COLUMNS] for row in cells]
    assert shown == [
        # declined hidden to protect row 2's column total; then accepted for the row's sum
        ["20", "20", "*", "*"],
        ["<5", "<5", "<5", "<5"],
        # its visits and decided hidden by the columns, then all its parts, the zero too
        ["*", "*", "*", "*"],
    ]
    assert all(c["value"] is None for row in cells for c in row.values() if c["suppressed"])


def test_suppress_without_column_totals_hides_only_within_rows():
    cells = suppress([{"n": figure(2)}, {"n": figure(9)}], ("n",), 5, column_totals=False)
    assert [c["n"]["text"] for c in cells] == ["<5", "9"]
    assert dashboard.cell(7, 5) == {"value": 7, "text": "7", "suppressed": False}


def test_equity_by_sex_with_suppression():
    events = []
    for i, (sex, accepted) in enumerate(
        [("female", True)] * 4 + [("female", False), ("male", True)]
    ):
        patient = f"E{i}"
        events += [
            shown(
                patient,
                MONDAY_W18 + timedelta(hours=i),
                ["naloxone-kit"],
                demographics={"sex": sex},
            ),
            decided(
                patient,
                MONDAY_W18 + timedelta(hours=i, minutes=5),
                [("naloxone-kit", accepted, None if accepted else "Has a kit")],
            ),
        ]
    equity = {d["name"]: d for d in dashboard.summarize(events)["equity"]}
    assert [d for d in equity] == ["race", "ethnicity", "sex", "age_group"]

    def rows(name: str) -> dict[str, list[str]]:
        return {
            row["value"]: [row[c]["text"] for c in dashboard.EQUITY_COLUMNS]
            + [row["acceptance_text"]]
            for row in equity[name]["rows"]
        }

    assert rows("sex") == {
        "Female": ["*", "*", "<5", "<5", "suppressed"],
        "Male": ["<5", "<5", "<5", "*", "suppressed"],
    }
    # Nothing recorded: one row of six visits; the one decline hides the accepted count too.
    assert rows("race") == {"Not recorded": ["6", "6", "*", "<5", "suppressed"]}


def test_equity_shows_acceptance_where_both_parts_are_shown():
    events = []
    for i in range(15):  # 25-34: five visits, all accepted; 45-54: ten, half accepted
        patient = f"Q{i}"
        events += [
            shown(
                patient,
                MONDAY_W18 + timedelta(hours=i),
                ["naloxone-kit"],
                demographics={"age_group": "25-34" if i < 5 else "45-54"},
            ),
            decided(
                patient,
                MONDAY_W18 + timedelta(hours=i, minutes=5),
                [("naloxone-kit", i < 10, None)],
            ),
        ]
    by_age = {d["name"]: d for d in dashboard.summarize(events)["equity"]}["age_group"]
    assert [
        (
            row["value"],
            [row[c]["text"] for c in dashboard.EQUITY_COLUMNS],
            row["acceptance"],
            row["acceptance_text"],
        )
        for row in by_age["rows"]
    ] == [
        ("25-34", ["5", "5", "5", "0"], 1.0, "100%"),
        ("45-54", ["10", "10", "5", "5"], 0.5, "50%"),
    ]


def test_no_patient_identity_leaves_the_figures():
    events = [*timed_events(), *linked_events()]
    text = json.dumps(dashboard.summarize(events, min_cell=1, programs=CATALOG), default=str)
    for patient in ("enc-A", "enc-L1", "ref-A", "ref-L1", ISS):
        assert patient not in text
