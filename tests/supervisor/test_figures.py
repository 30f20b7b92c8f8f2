"""The supervisor view's figures on a known set of log events (pure, no server): caseload per
coach each day (the most held at once), who took each handoff off the team queue and when, and the
after-hours coverage figures."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from smartapp.staff import caseload
from smartapp.staff.supervisor import figures

pytestmark = pytest.mark.unit

ZONE = ZoneInfo("America/New_York")
JORDAN = "http://ehr.test/fhir/Practitioner/demo-coach-1"
SAM = "urn:staff:coach-2"
CONSULT = [{"kind": "prc-consult", "accepted": True}, {"kind": "naloxone-kit", "accepted": True}]


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """November `day` 2026, New York time."""
    return datetime(2026, 11, day, hour, minute, tzinfo=ZONE)


def event(seq: int, when: datetime, type_: str, referral: str, user_ref=None, **data) -> dict:
    return {
        "seq": seq,
        "at": when,
        "type": type_,
        "user_ref": user_ref,
        "data": {"referral": referral, **data},
    }


# Four handoffs and one declined consult over three days (16-18 November):
# r1 signed 16th 10:00, Jordan accepts 10:20 (the log keeps Jordan relative: Practitioner/..),
#    reassigned to Sam on the 17th 09:00, Sam links it on the 18th 11:00.
# r2 signed 16th 22:30 (after hours), Jordan accepts on the 17th 08:15, still open.
# r3 signed 17th 14:00, closed by Jordan before anyone accepted it (patient left) 14:30.
# r4 signed 18th 06:00 (after hours), still waiting.
# r5 signed with the coach consult declined: no handoff.
EVENTS = [
    event(1, at(16, 10), "decision", "r1", decisions=CONSULT),
    event(
        2,
        at(16, 10, 20),
        "coach-accept",
        "r1",
        "Practitioner/demo-coach-1",
        task_status="accepted",
        user_name="Jordan Rivera, CPRS",
    ),
    event(3, at(16, 22, 30), "decision", "r2", decisions=CONSULT),
    event(
        4,
        at(17, 8, 15),
        "coach-accept",
        "r2",
        "Practitioner/demo-coach-1",
        task_status="accepted",
        user_name="Jordan Rivera, CPRS",
    ),
    event(
        5,
        at(17, 9),
        "handoff-reassign",
        "r1",
        "urn:staff:sup",
        **{
            "from": JORDAN,
            "from_name": "Jordan Rivera, CPRS",
            "to": SAM,
            "to_name": "Sam Lee, CPRS",
            "actor_kind": "supervisor",
        },
    ),
    event(
        6,
        at(17, 9, 30),
        "coach-contact",
        "r2",
        "Practitioner/demo-coach-1",
        task_status="in-progress",
    ),
    event(7, at(17, 14), "decision", "r3", decisions=CONSULT),
    event(
        8,
        at(17, 14, 30),
        "coach-close",
        "r3",
        "Practitioner/demo-coach-1",
        task_status="cancelled",
        reason="Patient left before contact",
    ),
    event(9, at(18, 6), "decision", "r4", decisions=CONSULT),
    event(10, at(18, 11), "coach-link", "r1", SAM, task_status="completed"),
    event(11, at(18, 12), "decision", "r5", decisions=[{"kind": "prc-consult", "accepted": False}]),
]
DAYS = [date(2026, 11, 15), date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18)]
NOW = at(18, 12)
COVERAGE = caseload.Settings.from_config(
    {"COACH_COVERAGE_HOURS": ["mon-fri 08:00-20:00"], "COACH_COVERAGE_TIMEZONE": "America/New_York"}
)


def in_hours(moment: datetime) -> bool:
    return caseload.in_coverage(COVERAGE, moment)


def test_caseload_per_coach_at_the_end_of_each_day():
    series = figures.caseload_over_time(reversed(EVENTS), DAYS, ZONE, NOW)  # order from `at`
    shown = {(s.ref, s.name): s.counts for s in series}
    assert shown == {
        # The most held at once: 16th r1; 17th r1 and r2 from 08:15 until r1 went to Sam at
        # 09:00; 18th (now, 12:00): r2.
        ("Practitioner/demo-coach-1", "Jordan Rivera, CPRS"): (0, 1, 2, 1),
        # 17th: r1; 18th: r1 until it was linked at 11:00 (held that day, closed the same day).
        (SAM, "Sam Lee, CPRS"): (0, 0, 1, 1),
    }
    assert [s.peak for s in series] == [2, 1]


def test_the_reference_forms_of_one_coach_are_one_coach():
    assert figures.coach_key(JORDAN) == figures.coach_key("Practitioner/demo-coach-1")
    assert figures.coach_key("urn:staff:coach-2") == "urn:staff:coach-2"
    reassigned_to_absolute = [
        *EVENTS[:2],
        event(20, at(16, 11), "handoff-reassign", "r1", "urn:staff:sup", to=JORDAN, to_name="J"),
    ]
    series = figures.caseload_over_time(reassigned_to_absolute, DAYS[1:2], ZONE, NOW)
    assert [(s.ref, s.counts) for s in series] == [("Practitioner/demo-coach-1", (1,))]


def test_who_took_each_handoff_and_how_long_it_waited():
    rows = figures.signed_handoffs(EVENTS, in_hours)
    assert [(r.referral_id, r.taken_by, r.after_hours) for r in rows] == [
        ("r1", "Jordan Rivera, CPRS", False),
        ("r2", "Jordan Rivera, CPRS", True),
        ("r3", "closed before a coach took it", False),
        ("r4", None, True),
    ]
    assert [r.waited_minutes(NOW) for r in rows] == [20, 585, 30, 360]


def test_after_hours_coverage_figures():
    result = figures.coverage(figures.signed_handoffs(EVENTS, in_hours), NOW)
    assert result == figures.Coverage(
        signed=4,
        after_hours=2,
        median_wait_in_hours=25,  # r1 20, r3 30
        median_wait_after_hours=472,  # r2 585, r4 360 so far
        still_waiting_after_hours=1,
    )
    assert figures.coverage([], NOW).median_wait_in_hours is None


def test_damaged_or_unrelated_events_are_left_out_and_days_count_back():
    noise = [
        {"seq": 99, "at": None, "type": "coach-accept", "user_ref": SAM, "data": {}},
        event(98, at(16, 9), "coach-accept", "", SAM),
    ]
    assert figures.caseload_over_time(noise, DAYS, ZONE, NOW) == []
    assert figures.period_days(date(2026, 11, 18), 3) == DAYS[1:]
