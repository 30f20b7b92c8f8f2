"""What a coach needs to reach the patient, taken from the chart the screen read (pure): a
phone number (Patient.telecom) and where the patient is in the ED (Encounter.location). Only
these two are kept with the referral, nothing else of the contact data."""

from __future__ import annotations

from typing import Any

# Which phone to call first: a mobile, then home, then any other use.
PHONE_USE_ORDER = ("mobile", "home", "work", "temp")


def phone_of(patient: dict[str, Any]) -> str | None:
    """The patient's phone to call: a current `phone` (or `sms`) ContactPoint, mobile first,
    then by `rank`; None when the chart has none."""
    points = [
        p
        for p in _list(patient.get("telecom"))
        if isinstance(p, dict)
        and p.get("system") in ("phone", "sms")
        and isinstance(p.get("value"), str)
        and p["value"].strip()
        and not (p.get("period") or {}).get("end")
        and p.get("use") != "old"
    ]
    if not points:
        return None

    def order(point: dict[str, Any]) -> tuple[int, int]:
        use = point.get("use")
        rank = point.get("rank")
        rank = rank if isinstance(rank, int) else 99
        return (PHONE_USE_ORDER.index(use) if use in PHONE_USE_ORDER else 9, rank)

    return str(sorted(points, key=order)[0]["value"]).strip()[:40]


def location_of(encounter: dict[str, Any]) -> str | None:
    """Where the patient is now: the Encounter's active (else latest) location, in words
    (the reference's display); None when the chart names none."""
    places = [p for p in _list(encounter.get("location")) if isinstance(p, dict)]
    if not places:
        return None
    active = [p for p in places if p.get("status") == "active"]
    place = (active or places)[-1]
    display = (place.get("location") or {}).get("display")
    return str(display).strip()[:200] if isinstance(display, str) and display.strip() else None


def contact_details(patient: dict[str, Any], encounter: dict[str, Any]) -> dict[str, Any]:
    """The phone and the location in the ED, as kept with what the screen showed."""
    return {"phone": phone_of(patient), "location": location_of(encounter)}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []
