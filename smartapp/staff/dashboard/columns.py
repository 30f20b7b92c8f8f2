"""A kept visit's figures as typed columns (`log_visit_figure`, issue 15): what each dashboard
figure reads of a visit, so a view adds the figures up in SQL (`aggregate`) instead of loading
every visit. Pure.

Each column is what the pure figures (`figures`, `groups`, `outcomes`) compute from a `Visit`,
computed here once, when the visit is kept or changed: flags as 0/1, minutes from arrival as
the same floats, demographics as recorded (NULL: not recorded). What a visit holds several of
(suggestion kinds and their rules, decision items, decline reasons), its demographics and its
program entries are small JSON texts that many visits share: kept once each
(`log_visit_text`), named by a 64-bit digest the figures group on, and expanded in Python once
per group. The patient is kept only as a digest, to count distinct patients.
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


def digest(text: str) -> int:
    """A text as a signed 64-bit integer (SHA-256's first 8 bytes): what the figures group on."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def patient_digest(patient: PatientKey) -> int:
    """The patient key as a digest: counted, never shown nor reversed."""
    return digest(_json(["patient", *patient]))


def minutes(arrival: datetime | None, later: datetime | None) -> float | None:
    """Minutes from arrival to a later step (the float the pure figures compute)."""
    if arrival is None or later is None:
        return None
    return (later - arrival).total_seconds() / 60


def week_number(label: str) -> int:
    """An ISO week label as year * 100 + week ("2024-W05": 202405), ordered as the labels."""
    year, week = label.split("-W")
    return int(year) * 100 + int(week)


def week_label(number: int) -> str:
    return f"{number // 100}-W{number % 100:02d}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def figure_row(visit: Visit, texts: dict[int, str]) -> dict[str, Any]:
    """The `log_visit_figure` columns of a visit (all but `id` and `visit_key`); the texts its
    digests stand for are added to `texts`."""

    def named(value: Any) -> int:
        text = _json(value)
        found = digest(text)
        texts[found] = text
        return found

    row: dict[str, Any] = {
        "first_shown": visit.first_shown,
        "week": week_number(visit.week),
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
        "shape": named(["shape", list(visit.kinds.items()), sorted(visit.rules), visit.decisions]),
        "declines": named(
            ["declines", sorted(reason or NO_REASON for _, ok, reason in visit.decisions if not ok)]
        ),
        "demographics": named(
            ["demographics", *(visit.demographics.get(name) or None for name, _ in DIMENSIONS)]
        ),
        "labels": named(["labels", *_entries(visit), visit.partner]) if visit.handoff else None,
    }
    for column, attribute in SPANS:
        row[column] = minutes(visit.arrival, getattr(visit, attribute))
    return row


def _entries(visit: Visit) -> list[str | None]:
    """What may name the visit's program, in `Visit.program_entries` order (None kept)."""
    return [visit.reported_program, visit.program_id, visit.program, visit.consent_program]
