"""A kept visit's figures as typed columns (`log_visit_figure`, issue 15): what each dashboard
figure reads of a visit, so a view adds the figures up in SQL (`aggregate`) instead of loading
every visit. Pure.

Each column is what the pure figures (`figures`, `groups`, `outcomes`) compute from a `Visit`,
computed here once, when the visit is kept or changed: flags as 0/1, minutes from arrival as
the same floats, demographics as recorded (NULL: not recorded). What a visit holds several of
(suggestion kinds and their rules, decision items, decline reasons) is kept as a small JSON
text that many visits share, grouped on in SQL and expanded in Python. The patient is kept only
as a digest, to count distinct patients.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from smartapp.staff.dashboard.figures import NO_REASON
from smartapp.staff.dashboard.groups import DIMENSIONS
from smartapp.staff.dashboard.visits import PARTNER, PatientKey, Visit

# (column, the Visit attribute whose minutes from arrival it holds)
SPANS = (
    ("to_decision", "decided_at"),
    ("to_contact", "contact_at"),
    ("to_first_contact", "first_contact_at"),
    ("to_scheduled", "scheduled_at"),
    ("to_attended", "attended_at"),
)


def patient_digest(patient: PatientKey) -> str:
    """The patient key as a digest (128 bits): counted, never shown nor reversed."""
    return hashlib.sha256(orjson.dumps(list(patient))).hexdigest()[:32]


def minutes(arrival: datetime | None, later: datetime | None) -> float | None:
    """Minutes from arrival to a later step (the float the pure figures compute)."""
    if arrival is None or later is None:
        return None
    return (later - arrival).total_seconds() / 60


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def figure_row(visit: Visit) -> dict[str, Any]:
    """The `log_visit_figure` columns of a visit (all but `id` and `visit_key`)."""
    row: dict[str, Any] = {
        "first_shown": visit.first_shown,
        "week": visit.week,
        "patient": patient_digest(visit.patient),
        "suggestions": len(visit.kinds),
        "signed": int(visit.decided_at is not None),
        "decisions": len(visit.decisions),
        "accepted": visit.accepted,
        "coach": int(visit.coach_referral),
        "contacted": int(visit.contact_at is not None),
        "handoff": int(visit.handoff),
        "by_partner": int(visit.linked_by == PARTNER),
        "by_coach": int(visit.linked_by == "coach"),
        "attended": int(visit.attended),
        "engaged": int(visit.engaged),
        "first_contacted": int(visit.first_contact_at is not None),
        "arrival": int(visit.arrival is not None),
        "kinds": _json([list(visit.kinds.items()), sorted(visit.rules)]),
        "decided": _json(visit.decisions),
        "declines": _json(
            sorted(reason or NO_REASON for _, ok, reason in visit.decisions if not ok)
        ),
        "labels": _json([*_entries(visit), visit.partner]) if visit.handoff else None,
    }
    for name, _ in DIMENSIONS:
        row[name] = visit.demographics.get(name) or None
    for column, attribute in SPANS:
        row[column] = minutes(visit.arrival, getattr(visit, attribute))
    return row


def _entries(visit: Visit) -> list[str | None]:
    """What may name the visit's program, in `Visit.program_entries` order (None kept)."""
    return [visit.reported_program, visit.program_id, visit.program, visit.consent_program]
