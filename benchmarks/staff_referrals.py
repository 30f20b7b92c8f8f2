"""The coach team's pages on a store of many referrals (issue 15: staff pages at any size):
the worklist, the team queue, the supervisor's overdue follow-ups and the whole supervisor
page, each the median of several views and as a ratio to a raw SELECT of one page of
referral rows measured in the same run.

    python benchmarks/staff_referrals.py [--referrals 20000 100000] [--repeat 5]

The store: referrals signed evenly over three years up to now (a program's history), 85% of
them handoffs (the coach consult is opt-out); a handoff older than 150 days is closed but for
3 in 100; follow-up contacts planned for every handoff, nine in ten made once due. Each
referral carries a decision with what the screen showed and a write plan of four resources,
as Sign stores them. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import median_ms  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from smartapp.config import Defaults  # noqa: E402
from smartapp.db import CoachHandoff, Database, FollowupContact, Referral  # noqa: E402
from smartapp.staff import caseload  # noqa: E402
from smartapp.staff.supervisor import service as supervisor  # noqa: E402
from smartapp.staff.worklist.items import items  # noqa: E402
from tests.referral_rows import referral_row  # noqa: E402

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OPEN = ("requested", "accepted", "in-progress")
CLOSED = ("completed", "completed", "completed", "cancelled", "rejected")


def decision(accepted: bool, index: int) -> dict:
    evidence = [{"words": "Opioid use disorder (problem list, 2026-10-01)", "reference": "x"}]
    shown = {
        "patient": {"name": f"Patient {index}"},
        "suggestions": [{"kind": "prc-consult", "evidence": evidence * 4}],
    }
    choices = [
        {"kind": "prc-consult", "accepted": accepted},
        {"kind": "naloxone", "accepted": True},
    ]
    return {"decisions": choices, "consult_mode": "in-person", "shown": shown}


def write_plan() -> dict:
    resource = {"resourceType": "ServiceRequest", "status": "active", "note": [{"text": "n" * 300}]}
    operation = {"key": "k", "type": "ServiceRequest", "mode": "rest", "method": "POST"}
    operation |= {"status": "written", "resource": resource, "id": "sr-1", "http": "201 Created"}
    return {"profile": "fhir-rest", "operations": [operation] * 4}


def build(db: Database, count: int, seed: int = 1) -> None:
    """The store described above, inserted in batches."""
    rnd = random.Random(seed)
    plan = write_plan()
    referrals, rows, contacts = [], [], []
    for i in range(count):
        signed = NOW - timedelta(days=3 * 365 * (count - i) / count)
        referral_id = f"ref-{i:08d}"
        accepted = rnd.random() < 0.85
        referrals.append(referral_row(referral_id, i, signed, decision(accepted, i), plan))
        if not accepted:
            continue
        old = signed < NOW - timedelta(days=150)
        status = rnd.choice(CLOSED if old and rnd.random() < 0.97 else OPEN)
        rows.append({"referral_id": referral_id, "status": status, "coach_name": "Coach One"})
        for day in (1, 3, 7, 30):
            due = signed + timedelta(days=day)
            done = due if due < NOW and rnd.random() < 0.9 else None
            contacts.append(
                {"referral_id": referral_id, "day": day, "due_at": due, "done_at": done}
            )
    with db.engine.begin() as connection:
        for table, values in (
            (Referral, referrals),
            (CoachHandoff, rows),
            (FollowupContact, contacts),
        ):
            for start in range(0, len(values), 5000):
                connection.execute(insert(table), values[start : start + 5000])


def raw_referral_page(db: Database) -> None:
    """The floor: one page (50) of referral rows, newest first, every column."""
    with db.engine.connect() as connection:
        query = text("SELECT * FROM referral ORDER BY created_at DESC LIMIT 50")
        connection.execute(query).fetchall()


def measure(count: int, repeat: int) -> dict:
    config = {name: getattr(Defaults, name) for name in dir(Defaults) if name.isupper()}
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{Path(folder) / 'handoff.sqlite'}")
        db.migrate()
        build(db, count)
        views = {
            "worklist": partial(items, db, NOW),
            "team_queue": partial(caseload.team_queue, db, NOW),
            "overdue": partial(supervisor.overdue_followups, db, config, NOW),
            "supervisor_page": partial(supervisor.supervisor_page, db, config, None, NOW),
        }
        floor = median_ms(partial(raw_referral_page, db), repeat)
        figures = {f"referral_floor_ms_{count}": round(floor, 2)}
        for name, view in views.items():
            view()  # warm, and the first view's plans
            took = median_ms(view, repeat)
            figures[f"{name}_ms_{count}"] = round(took, 1)
            figures[f"{name}_to_floor_{count}"] = round(took / floor, 1)
            print(f"{count:>7} referrals: {name} {took:.1f} ms ({took / floor:.1f}x the floor)")
        db.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    figures: dict = {}
    for count in args.referrals:
        figures |= measure(count, args.repeat)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
