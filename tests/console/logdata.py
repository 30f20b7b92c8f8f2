"""A referral log as the app writes it, for the console and dashboard tests.

`VISITS` is small and written out by hand so that every dashboard figure can be checked exactly
(the expected numbers are worked out in test_dashboard.py). `busy_visits()` makes a larger,
seeded log for the screenshots. Events are appended through `referral_log.append` in time order,
with the chain's clock set to each event's time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from smartapp.audit import log as referral_log
from smartapp.db import Database

ISS = "https://ehr.example.org/fhir"
DR_A = "Practitioner/dr-a"
DR_B = "Practitioner/dr-b"
COACH = "Practitioner/coach-1"
AUDITOR = "Practitioner/auditor-1"
PACK = {"id": "handoff-default", "version": "1.0.0", "hash": "sha256:abc"}

RULES = {
    "prc-consult": "prc-consult-sud-adult",
    "moud-buprenorphine": "moud-buprenorphine-oud",
    "moud-continue": "moud-continue-on-moud",
    "naloxone-kit": "naloxone-kit-at-risk",
}
EVIDENCE = {
    "prc-consult": "Condition/oud-1",
    "moud-buprenorphine": "Observation/cows-1",
    "moud-continue": "MedicationStatement/bup-1",
    "naloxone-kit": "Condition/overdose-1",
}


@dataclass(frozen=True)
class Visit:
    """One ED visit: what was shown, decided, written and what the coach did (minutes after
    arrival). `chart_start` is the encounter start as the chart gave it (None: not given)."""

    patient: str
    encounter: str
    name: str
    physician: str
    arrival: datetime
    chart_start: str | None
    demographics: dict
    kinds: tuple[str, ...]
    decisions: tuple[tuple[str, bool, str | None, str | None], ...] = ()
    decided_after: int | None = None
    writes: tuple[tuple[str, int], ...] = ()  # (written | queued | failed | held, minutes)
    coach: tuple[tuple[str, int, dict], ...] = ()  # (accept | contact | link | close, ...)
    shown_after: int = 10
    reloads: int = 0
    start_only_in_decision: bool = False

    @property
    def referral(self) -> str:
        return f"ref-{self.encounter}"


def demo(race: str | None, ethnicity: str | None, sex: str | None, age: str | None) -> dict:
    return {"race": race, "ethnicity": ethnicity, "sex": sex, "age_group": age}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


WHITE, BLACK, ASIAN = "White", "Black or African American", "Asian"
NH, HISP = "Not Hispanic or Latino", "Hispanic or Latino"
ACC = True
DEC = False

VISITS: tuple[Visit, ...] = (
    # ISO week 2024-W18
    Visit(
        "pat-01-c4e2",
        "enc-01a-7d1f",
        "Jordan Rivera",
        DR_A,
        at("2024-04-29T08:00"),
        "2024-04-29T04:00:00-04:00",
        demo(WHITE, NH, "female", "25-34"),
        ("prc-consult", "moud-buprenorphine", "naloxone-kit"),
        (
            ("prc-consult", ACC, None, None),
            ("moud-buprenorphine", ACC, None, None),
            ("naloxone-kit", ACC, None, None),
        ),
        90,
        (("written", 91),),
        (
            ("accept", 100, {}),
            ("contact", 180, {"note": "met in bay 4"}),
            ("link", 240, {"program": "Bridge Clinic"}),
        ),
    ),
    Visit(
        "pat-02-9a31",
        "enc-02-51be",
        "Casey Morgan",
        DR_A,
        at("2024-04-30T14:00"),
        "2024-04-30T14:00:00Z",
        demo(WHITE, NH, "male", "35-44"),
        ("prc-consult", "naloxone-kit"),
        (("prc-consult", ACC, None, None), ("naloxone-kit", DEC, "Patient declined", None)),
        120,
        (("queued", 121), ("written", 126)),
        (
            ("accept", 130, {}),
            ("contact", 300, {}),
            ("close", 320, {"reason": "Patient declined the coach"}),
        ),
    ),
    Visit(
        "pat-03-e08d",
        "enc-03-0c9a",
        "Riley Brooks",
        DR_B,
        at("2024-05-02T22:30"),
        "2024-05-02T22:30:00Z",
        demo(BLACK, NH, "female", "18-24"),
        ("prc-consult", "moud-buprenorphine"),
        (
            ("prc-consult", DEC, "Patient declined", None),
            ("moud-buprenorphine", DEC, "Already in treatment elsewhere", None),
        ),
        40,
        (("written", 41),),
    ),
    # ISO week 2024-W19
    Visit(
        "pat-04-3f7b",
        "enc-04-a2d4",
        "Avery Chen",
        DR_B,
        at("2024-05-06T09:15"),
        "2024-05-06T09:15:00Z",
        demo(WHITE, HISP, "male", "45-54"),
        ("prc-consult", "moud-buprenorphine", "naloxone-kit"),
        (
            ("prc-consult", ACC, None, None),
            ("moud-buprenorphine", ACC, None, None),
            ("naloxone-kit", ACC, None, None),
        ),
        45,
        (("written", 46),),
        (("accept", 50, {}), ("contact", 90, {}), ("link", 120, {"program": "Bridge Clinic"})),
    ),
    Visit(
        "pat-05-b6c0",
        "enc-05-e913",
        "Morgan Patel",
        DR_A,
        at("2024-05-07T11:00"),
        "2024-05-07T11:00:00Z",
        demo(ASIAN, NH, "female", "25-34"),
        ("prc-consult", "naloxone-kit"),
        (("prc-consult", ACC, None, None), ("naloxone-kit", ACC, None, None)),
        30,
        (("written", 31),),
        (("accept", 35, {}), ("contact", 40, {}), ("link", 60, {"program": "Harbor Recovery"})),
    ),
    Visit(
        "pat-06-41d8",
        "enc-06-7b22",
        "Sam Okafor",
        DR_A,
        at("2024-05-09T03:00"),
        "2024-05-09T03:00:00Z",
        demo(WHITE, NH, "female", "35-44"),
        ("prc-consult",),
        (("prc-consult", DEC, "Coach unavailable", None),),
        35,
    ),
    Visit(
        "pat-07-d2e5",
        "enc-07-4c6f",
        "Taylor Nguyen",
        DR_B,
        at("2024-05-11T19:00"),
        "2024-05-11T19:00:00Z",
        demo(BLACK, NH, "male", "25-34"),
        ("prc-consult", "moud-buprenorphine"),
        (
            ("prc-consult", ACC, None, None),
            ("moud-buprenorphine", DEC, "Clinically inappropriate now", None),
        ),
        200,
        (("failed", 201),),
        (("accept", 210, {}), ("contact", 1560, {})),
    ),
    # ISO week 2024-W20
    Visit(
        "pat-08-70aa",
        "enc-08-d0e1",
        "Jamie Santos",
        DR_A,
        at("2024-05-13T07:30"),
        "2024-05-13T07:30:00Z",
        demo(WHITE, NH, "female", "55-64"),
        ("prc-consult", "moud-continue"),
        (("prc-consult", ACC, None, None), ("moud-continue", ACC, None, None)),
        60,
        (("written", 61),),
        (("accept", 70, {}), ("contact", 150, {}), ("link", 200, {"program": "Bridge Clinic"})),
    ),
    Visit(
        "pat-09-2b94",
        "enc-09-85f3",
        "Drew Kowalski",
        DR_B,
        at("2024-05-14T13:00"),
        "2024-05-14T13:00:00Z",
        demo(None, None, None, "25-34"),
        ("prc-consult", "naloxone-kit"),
        (
            ("prc-consult", ACC, None, None),
            ("naloxone-kit", DEC, "Other", "has a kit at home from the pharmacy"),
        ),
        150,
        (("queued", 151),),
        (
            ("accept", 155, {}),
            ("contact", 360, {}),
            ("close", 400, {"reason": "Admitted or transferred"}),
        ),
    ),
    Visit(
        "pat-10-f1c3",
        "enc-10-3ad7",
        "Quinn Adeyemi",
        DR_A,
        at("2024-05-15T16:00"),
        "2024-05-15T16:00:00Z",
        demo(WHITE, NH, "male", "18-24"),
        ("prc-consult", "moud-buprenorphine", "naloxone-kit"),
        (
            ("prc-consult", ACC, None, None),
            ("moud-buprenorphine", ACC, None, None),
            ("naloxone-kit", ACC, None, None),
        ),
        20,
        (("written", 21),),
        (("accept", 25, {}), ("contact", 45, {}), ("link", 90, {"program": "Harbor Recovery"})),
        start_only_in_decision=True,
    ),
    Visit(
        "pat-11-5e6f",
        "enc-11-c8b0",
        "Rowan Fischer",
        DR_B,
        at("2024-05-16T10:00"),
        "2024-05-16T10:00:00Z",
        demo(BLACK, NH, "male", "35-44"),
        ("prc-consult",),
    ),
    Visit(
        "pat-01-c4e2",
        "enc-01b-19e4",
        "Jordan Rivera",
        DR_B,
        at("2024-05-17T20:00"),
        "2024-05-17T20:00:00Z",
        demo(WHITE, NH, "female", "25-34"),
        ("prc-consult", "moud-buprenorphine"),
        (
            ("prc-consult", ACC, None, None),
            ("moud-buprenorphine", DEC, "Already in treatment elsewhere", None),
        ),
        75,
        (("written", 76),),
        (
            ("accept", 80, {}),
            ("close", 100, {"reason": "Linked to a program", "note": "already with Bridge"}),
        ),
    ),
    Visit(
        "pat-12-aa07",
        "enc-12-6d3e",
        "Ellis Romero",
        DR_A,
        at("2024-05-19T12:00"),
        None,
        demo(WHITE, NH, "female", "45-54"),
        ("prc-consult", "naloxone-kit"),
        (("prc-consult", ACC, None, None), ("naloxone-kit", ACC, None, None)),
        100,
        (("held", 101),),
        (("accept", 110, {}),),
        reloads=1,
    ),
)

PATIENT_IDS = sorted({v.patient for v in VISITS})
ENCOUNTER_IDS = sorted({v.encounter for v in VISITS})
NAMES = sorted({v.name for v in VISITS})


@dataclass
class Clock:
    """Stands in for the chain's `utcnow`: a set time while filling, real time otherwise."""

    now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@dataclass(order=True)
class Planned:
    """One event to append: when, then its columns and data."""

    when: datetime
    order: int
    type: str = field(compare=False)
    columns: dict = field(compare=False)
    data: dict = field(compare=False)


def _events(visit: Visit, order: Iterator[int]) -> Iterator[Planned]:
    who = dict(
        iss=ISS, patient_id=visit.patient, encounter_id=visit.encounter, user_ref=visit.physician
    )
    t = visit.arrival

    def plan(minutes: float, type_: str, data: dict, **override) -> Planned:
        return Planned(t + timedelta(minutes=minutes), next(order), type_, who | override, data)

    yield plan(visit.shown_after - 1, "launch", {"scope": "launch openid", "registration": "epic"})
    shown = {
        "pack": PACK,
        "demographics": visit.demographics,
        "encounter_start": None if visit.start_only_in_decision else visit.chart_start,
        "suggestions": [
            {
                "kind": k,
                "variant": None,
                "cautions": [],
                "rule": RULES[k],
                "evidence": [EVIDENCE[k]],
            }
            for k in visit.kinds
        ],
    }
    for reload in range(visit.reloads + 1):
        yield plan(visit.shown_after + 2 * reload, "suggestions-shown", shown)
    if visit.decided_after is not None:
        yield plan(
            visit.decided_after,
            "decision",
            {
                "referral": visit.referral,
                "profile": "epic",
                "kept_in_handoff": [],
                "pack": PACK,
                "consult_mode": "in-person",
                "program": None,
                "shown": {
                    "patient": {"name": visit.name, "birthDate": "1990-01-01", "mrn": "MRN-77"},
                    "encounter": {"id": visit.encounter, "start": visit.chart_start},
                },
                "decisions": [
                    {"kind": k, "accepted": a, "reason": r, "text": x}
                    for k, a, r, x in visit.decisions
                ],
            },
        )
    for attempt, (outcome, minutes) in enumerate(visit.writes, start=1):
        if outcome == "held":
            yield plan(
                minutes,
                "write-held",
                {"referral": visit.referral, "reason": "no write scope granted"},
            )
        else:
            yield plan(
                minutes,
                "write-attempt",
                {
                    "referral": visit.referral,
                    "attempt": attempt,
                    "outcome": outcome,
                    "error": {"queued": "HTTP 503", "failed": "HTTP 422: Task.owner"}.get(outcome),
                    "written": [{"resourceType": "ServiceRequest", "id": f"sr-{visit.encounter}"}]
                    if outcome == "written"
                    else None,
                },
            )
    status = {"accept": "accepted", "contact": "in-progress", "link": "completed"}
    for action, minutes, extra in visit.coach:
        task = status.get(action) or (
            "completed" if extra.get("reason") == "Linked to a program" else "cancelled"
        )
        yield plan(
            minutes,
            f"coach-{action}",
            {
                "referral": visit.referral,
                "task_status": task,
                "note": extra.get("note"),
                "program": extra.get("program"),
                "reason": extra.get("reason"),
            },
            user_ref=COACH,
        )


def planned(visits: tuple[Visit, ...] = VISITS) -> list[Planned]:
    """Every event of the log in time order, with a staff sign-in and an earlier audit read."""
    order = iter(range(10**9))
    events = [e for v in visits for e in _events(v, order)]
    first = min(p.when for p in events)
    events += [
        Planned(
            first - timedelta(hours=2),
            next(order),
            "staff-sign-in",
            {"user_ref": AUDITOR},
            {"roles": ["auditor"]},
        ),
        Planned(
            first - timedelta(hours=1),
            next(order),
            "audit-read",
            {"user_ref": AUDITOR},
            {"query": "log search (all events), page 1"},
        ),
    ]
    return sorted(events)


def as_dicts(visits: tuple[Visit, ...] = VISITS) -> list[dict]:
    """The log as the dashboard reads it (no database): dicts with seq and time."""
    return [
        {
            "seq": seq,
            "at": p.when,
            "type": p.type,
            "iss": None,
            "patient_id": None,
            "encounter_id": None,
            "user_ref": None,
        }
        | p.columns
        | {"data": p.data}
        for seq, p in enumerate(planned(visits), start=1)
    ]


def fill(db: Database, clock: Clock, visits: tuple[Visit, ...] = VISITS) -> None:
    """Append every event in time order, each in its own unit of work (as the app does), with
    the chain's clock at the event's time; then give the clock back."""
    for item in planned(visits):
        clock.now = item.when
        with db.session() as session:
            referral_log.append(session, item.type, **item.columns, data=item.data)
    clock.now = None


# -- a larger log for the screenshots ---------------------------------------------------------

REASONS = (
    "Patient declined",
    "Already in treatment elsewhere",
    "Clinically inappropriate now",
    "Coach unavailable",
    "Other",
)
PROGRAMS = ("Bridge Clinic", "Harbor Recovery", "Eastside MOUD Program", "Hope Peer Network")
# The programs of the catalog these logs were written against (the dashboard names no others).
CATALOG_PROGRAMS = PROGRAMS


def busy_visits(count: int = 180, weeks: int = 10, seed: int = 7) -> tuple[Visit, ...]:
    """A seeded mix of visits over `weeks` ISO weeks, shaped like a real ED program's month."""
    rng = random.Random(seed)
    start = at("2024-03-04T00:00")  # a Monday
    patients = [f"pat-{i:03d}-{rng.getrandbits(24):06x}" for i in range(int(count * 0.85))]
    races = (WHITE,) * 6 + (BLACK,) * 3 + (ASIAN, "American Indian or Alaska Native", None)
    sexes = ("female",) * 5 + ("male",) * 6 + ("unknown",)
    ages = ("18-24", "25-34", "25-34", "35-44", "35-44", "45-54", "55-64", "65+")
    profile = {
        p: demo(
            rng.choice(races),
            rng.choice((NH,) * 4 + (HISP, None)),
            rng.choice(sexes),
            rng.choice(ages),
        )
        for p in patients
    }
    out = []
    for n in range(count):
        patient = rng.choice(patients)
        arrival = start + timedelta(
            days=rng.randrange(weeks * 7), hours=rng.randrange(24), minutes=rng.randrange(60)
        )
        kinds = ["prc-consult"] + [
            k
            for k in ("moud-buprenorphine", "naloxone-kit", "moud-continue")
            if rng.random()
            < {"moud-buprenorphine": 0.5, "naloxone-kit": 0.6, "moud-continue": 0.1}[k]
        ]
        undecided = rng.random() < 0.06
        decisions = (
            tuple(
                (k, True, None, None)
                if rng.random() < 0.7
                else (k, False, rng.choice(REASONS), None)
                for k in kinds
            )
            if not undecided
            else ()
        )
        decided_after = None if undecided else rng.randrange(25, 240)
        coach: tuple = ()
        if decisions and decisions[0][1]:
            accept = decided_after + rng.randrange(3, 40)
            steps = [("accept", accept, {})]
            if rng.random() < 0.85:
                contact = accept + int(rng.expovariate(1 / 150)) + 5
                steps.append(("contact", contact, {}))
                if rng.random() < 0.55:
                    steps.append(("link", contact + 60, {"program": rng.choice(PROGRAMS)}))
            coach = tuple(steps)
        out.append(
            Visit(
                patient,
                f"enc-{n:04d}-{rng.getrandbits(20):05x}",
                f"Patient {n}",
                rng.choice((DR_A, DR_B, "Practitioner/dr-c")),
                arrival,
                arrival.strftime("%Y-%m-%dT%H:%M:%SZ"),
                profile[patient],
                tuple(kinds),
                decisions,
                decided_after,
                (("written", decided_after + 1),) if decided_after else (),
                coach,
            )
        )
    return tuple(out)
