"""FHIR date, dateTime and instant strings: parse to search ranges, format, shift.

Search works on millisecond ranges: "2026-11-20" covers the whole day, "2026-11" the month,
a dateTime with seconds one second. Shifting keeps the string's precision and its timezone
notation ("Z" stays "Z", "-05:00" stays "-05:00") so shifted data looks like the original.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

#: Range bounds for open ends (a Period without end, a search without lower bound).
MIN_MS = -(2**62)
MAX_MS = 2**62

_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _tz(text: str | None) -> timezone:
    if not text or text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_range(text: str) -> tuple[int, int] | None:
    """The [low, high] millisecond range (inclusive) a FHIR date/dateTime/instant covers.

    None when `text` is not a FHIR date. Values without timezone are read as UTC.
    """
    match = _DATE_RE.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, frac, tz = match.groups()
    try:
        if month is None:
            low = datetime(int(year), 1, 1, tzinfo=UTC)
            high = datetime(int(year) + 1, 1, 1, tzinfo=UTC)
        elif day is None:
            low = datetime(int(year), int(month), 1, tzinfo=UTC)
            high = (low + timedelta(days=32)).replace(day=1)
        elif hour is None:
            low = datetime(int(year), int(month), int(day), tzinfo=UTC)
            high = low + timedelta(days=1)
        else:
            zone = _tz(tz)
            micro = int((frac or ".0")[1:7].ljust(6, "0"))
            low = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                micro,
                tzinfo=zone,
            )
            if frac:
                step = timedelta(milliseconds=1)
            elif second is not None:
                step = timedelta(seconds=1)
            else:
                step = timedelta(minutes=1)
            high = low + step
    except ValueError:
        return None
    return _ms(low), max(_ms(high) - 1, _ms(low))


def parse_instant(text: str) -> datetime | None:
    """A timezone-aware datetime for a FHIR dateTime/date string (start of its range)."""
    rng = parse_range(text)
    if rng is None:
        return None
    return _EPOCH + timedelta(milliseconds=rng[0])


def format_instant(moment: datetime) -> str:
    """FHIR instant in UTC with milliseconds, e.g. 2026-11-20T15:00:00.000Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch for an aware datetime."""
    return _ms(moment)


def shift_string(text: str, delta: timedelta, days: int) -> str | None:
    """`text` moved by `delta` (dateTimes) or `days` (dates), precision and zone kept.

    Returns None when `text` is not a full date (YYYY-MM-DD) or dateTime: partial dates such as
    "2019" are left alone because they are indistinguishable from codes or postal codes.
    """
    if len(text) < 10 or text[4] != "-" or text[7] != "-":
        return None
    match = _DATE_RE.match(text)
    if not match or match.group(3) is None:
        return None
    year, month, day, hour, minute, second, frac, tz = match.groups()
    try:
        if hour is None:
            return (date(int(year), int(month), int(day)) + timedelta(days=days)).isoformat()
        micro = int((frac or ".0")[1:7].ljust(6, "0"))
        zone = _tz(tz)
        moment = (
            datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                micro,
                tzinfo=zone,
            )
            + delta
        )
    except (ValueError, OverflowError):
        return None
    out = moment.strftime("%Y-%m-%dT%H:%M")
    if second is not None:
        out += moment.strftime(":%S")
        if frac:
            out += "." + f"{moment.microsecond:06d}"[: len(frac) - 1].ljust(len(frac) - 1, "0")
    if tz:
        out += tz if tz == "Z" else moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]
    return out


#: Keys whose string values are never dates even when they look like one.
_NOT_DATES = frozenset(
    {
        "id",
        "reference",
        "url",
        "system",
        "code",
        "value",
        "div",
        "data",
        "display",
        "text",
        "versionId",
        "valueString",
        "postalCode",
        "version",
    }
)


def shift_resource_dates(node: object, delta: timedelta, days: int) -> None:
    """Shift every FHIR date/dateTime/instant string inside `node` in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if key not in _NOT_DATES:
                    shifted = shift_string(value, delta, days)
                    if shifted is not None:
                        node[key] = shifted
            elif isinstance(value, dict | list):
                shift_resource_dates(value, delta, days)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                shifted = shift_string(value, delta, days)
                if shifted is not None:
                    node[index] = shifted
            elif isinstance(value, dict | list):
                shift_resource_dates(value, delta, days)
