"""A referral log with the handoff's lifecycle (issue 11), for the dashboard outcome tests.

Eight visits of eight patients (arrival on 2024-05-06, one hour apart); the visits' own events
come from `tests.console.logdata`, the lifecycle events (`handoff-status`, `coach-link` with a
program id, `followup-*`, `consent-recorded`) are appended with `referral_log.append_about`,
naming who acted as the lifecycle service does (coach `Cal Coach`, partner organisations).
Everything goes in through the app's append path, in time order, in a real SQLite database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from smartapp.audit import log as referral_log
from smartapp.db import Database
from tests.console import logdata

COACH_NAME = "Cal Coach"
PARTNER_REF = "Organization/example-bridge-health"
PARTNER_NAME = "Example Bridge Health Partners"  # the partner file's name for it
PARTNER_USER = "Robin Intake"  # who acted for the partner: never on the dashboard
BASE = datetime(2024, 5, 6, 8, tzinfo=UTC)
DAY = 1440


@dataclass(frozen=True)
class About:
    """What `append_about` needs of a referral (its launch's columns)."""

    user_ref: str | None
    iss: str | None
    patient_id: str | None
    encounter_id: str | None


@dataclass(frozen=True)
class Step:
    """One lifecycle event: whose visit (1-based), minutes after arrival, type, data, actor."""

    visit: int
    minutes: int
    type: str
    data: dict
    actor: str  # coach | partner | physician


def visit(n: int, coach: tuple = (("accept", 14, {}),), referral: bool = True) -> logdata.Visit:
    """A visit shown 10 min after arrival, whose physician accepted (or declined) the coach
    consult, signed 12 min in."""
    arrival = BASE + timedelta(hours=n)
    return logdata.Visit(
        f"pat-o{n:02d}-77aa",
        f"enc-o{n:02d}-88bb",
        f"Outcome Patient {n:02d}",
        logdata.DR_A,
        arrival,
        arrival.strftime("%Y-%m-%dT%H:%M:%SZ"),
        logdata.demo(logdata.WHITE, logdata.NH, "female", "25-34"),
        ("prc-consult", "naloxone-kit"),
        (
            ("prc-consult", referral, None if referral else "Patient declined", None),
            ("naloxone-kit", True, None, None),
        ),
        12,
        (("written", 13),),
        coach if referral else (),
    )


def iso(n: int, minutes: int) -> str:
    """The time `minutes` after visit n's arrival, as a partner would report it (`at`)."""
    return (BASE + timedelta(hours=n, minutes=minutes)).isoformat()


VISITS = (
    visit(1, (("accept", 14, {}), ("contact", 60, {}))),
    visit(
        2,
        (
            ("accept", 14, {}),
            ("contact", 30, {}),
            ("link", 120, {"program": "Example Bridge Clinic (555-0100)"}),
        ),
    ),
    visit(3),
    visit(4, (("accept", 14, {}), ("contact", 45, {}))),
    visit(5, (("accept", 14, {}), ("contact", 20, {}))),
    visit(6),
    visit(7, (("accept", 14, {}), ("contact", 240, {}))),
    visit(8, referral=False),
)

BRIDGE = {"program": "bridge-clinic", "partner": "bridge-health"}
TELE = {"program": "bridge-telehealth", "partner": "bridge-health"}
STEPS = (
    # 1: the partner schedules (a day after arrival, reported the next day), then reports the
    # first appointment attended at 3 days; at the day-30 follow-up the patient is in treatment.
    Step(
        1,
        2 * DAY,
        "handoff-status",
        {"task_status": "accepted", "business_status": "appointment-scheduled", "at": iso(1, DAY)}
        | BRIDGE,
        "partner",
    ),  # noqa: E501
    Step(
        1,
        4 * DAY,
        "handoff-status",
        {
            "task_status": "in-progress",
            "business_status": "appointment-attended",
            "at": iso(1, 3 * DAY),
        }
        | BRIDGE,
        "partner",
    ),  # noqa: E501
    Step(1, 30 * DAY, "followup-outcome", {"day": 30, "outcome": "in-treatment"}, "coach"),
    # 2: the coach linked it and reported the appointment scheduled; the partner's later
    # acceptance repeats the step: confirmed by the coach, not by the partner.
    Step(
        2,
        150,
        "handoff-status",
        {
            "task_status": "in-progress",
            "business_status": "appointment-scheduled",
            "program": "bridge-clinic",
        },
        "coach",
    ),  # noqa: E501
    Step(
        2,
        200,
        "handoff-status",
        {"task_status": "accepted", "business_status": "appointment-scheduled"} | BRIDGE,
        "partner",
    ),  # noqa: E501
    # 3: the program contacts the patient, then reports engagement at 30 days (attended implied).
    Step(
        3,
        90,
        "handoff-status",
        {"task_status": "accepted", "business_status": "contacted"} | TELE,
        "partner",
    ),  # noqa: E501
    Step(
        3,
        30 * DAY + 100,
        "handoff-status",
        {"task_status": "in-progress", "business_status": "engaged-30-days", "at": iso(3, 30 * DAY)}
        | TELE,
        "partner",
    ),  # noqa: E501
    # 4: the coach links a catalog program (with its id) and reports the appointment attended.
    Step(
        4,
        100,
        "coach-link",
        {
            "task_status": "completed",
            "program": "Example Riverside Opioid Treatment Program (555-0142)",
            "program_id": "riverside-methadone",
            "note": "met at the door",
        },
        "coach",
    ),  # noqa: E501
    Step(
        4,
        2 * DAY,
        "handoff-status",
        {"task_status": "completed", "business_status": "appointment-attended"},
        "coach",
    ),  # noqa: E501
    # 5: not linked, but attending a program at the day-30 follow-up.
    Step(5, DAY, "followup-attempt", {"day": 1, "result": "reached", "note": "doing ok"}, "coach"),
    Step(5, 30 * DAY, "followup-outcome", {"day": 30, "outcome": "attending"}, "coach"),
    # 6: reached only at the second follow-up attempt; lost at 30 days.
    Step(
        6, 100, "followup-attempt", {"day": 1, "result": "no-answer", "note": "voicemail"}, "coach"
    ),  # noqa: E501
    Step(
        6, 1500, "followup-attempt", {"day": 1, "result": "reached", "note": "call back"}, "coach"
    ),  # noqa: E501
    Step(6, 7 * DAY, "followup-outcome", {"day": 7, "outcome": "in-treatment"}, "coach"),
    Step(6, 30 * DAY, "followup-outcome", {"day": 30, "outcome": "lost"}, "coach"),
    # 7: consent names the program; the partner's update does not, and gives a date only.
    Step(7, 250, "consent-recorded", {"consent": "c-7", "purpose": "treatment"} | BRIDGE, "coach"),
    Step(
        7,
        3000,
        "handoff-status",
        {
            "task_status": "accepted",
            "business_status": "appointment-scheduled",
            "partner": "bridge-health",
            "program": None,
            "at": "2024-05-08",
        },
        "partner",
    ),  # noqa: E501
    # 8: no coach: the physician recorded consent for a partner Handoff has no data for, which
    # reports a scheduling time before the ED arrival (a clock or a typing error).
    Step(
        8,
        20,
        "consent-recorded",
        {
            "consent": "c-8",
            "purpose": "treatment",
            "program": "riverside-methadone",
            "partner": "riverside-tc",
        },
        "physician",
    ),  # noqa: E501
    Step(
        8,
        500,
        "handoff-status",
        {
            "task_status": "accepted",
            "business_status": "appointment-scheduled",
            "program": "riverside-methadone",
            "partner": "riverside-tc",
            "at": iso(8, -60),
        },
        "partner",
    ),  # noqa: E501
)


def _actor(step: Step) -> tuple[str, str]:
    if step.actor == "partner":
        return PARTNER_REF, PARTNER_USER
    if step.actor == "coach":
        return logdata.COACH, COACH_NAME
    return logdata.DR_A, "Dr A"


def fill(
    db: Database,
    clock: logdata.Clock,
    visits: tuple[logdata.Visit, ...] = VISITS,
    steps: tuple[Step, ...] = STEPS,
) -> None:
    """Append the visits' events and their lifecycle steps in time order, each in its own unit
    of work, with the chain's clock at the event's time."""
    plan = [(p.when, 0, p) for p in logdata.planned(visits)]
    plan += [(visits[s.visit - 1].arrival + timedelta(minutes=s.minutes), 1, s) for s in steps]
    for when, _, item in sorted(plan, key=lambda x: (x[0], x[1])):
        clock.now = when
        with db.session() as session:
            if isinstance(item, Step):
                owner = visits[item.visit - 1]
                user_ref, user_name = _actor(item)
                referral_log.append_about(
                    session,
                    item.type,
                    About(logdata.DR_A, logdata.ISS, owner.patient, owner.encounter),
                    data={"referral": owner.referral, "actor_kind": item.actor} | item.data,
                    user_ref=user_ref,
                    user_name=user_name,
                )
            else:
                referral_log.append(session, item.type, **item.columns, data=item.data)
    clock.now = None
