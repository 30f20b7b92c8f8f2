"""Rates and durations as the dashboard shows them (pure)."""

from __future__ import annotations


def rate(part: int, whole: int) -> float | None:
    """part/whole as a fraction, None when whole is 0."""
    return part / whole if whole else None


def percent(value: float | None) -> str:
    """A fraction as a whole percentage; "—" for None."""
    return "—" if value is None else f"{round(value * 100)}%"


def format_minutes(minutes: float | None) -> str:
    """ "2 h 35 min", "40 min", "3 d 4 h"; "—" for None."""
    if minutes is None:
        return "—"
    total = round(minutes)
    if total < 60:
        return f"{total} min"
    hours, rest = divmod(total, 60)
    if hours < 24:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
