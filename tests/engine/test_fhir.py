"""FHIR date, age and reference readers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from smartapp.engine.fhir import age_in_years, parse_datetime, type_id_of, youngest_birth_date


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T15:00:00Z", datetime(2026, 11, 20, 15, tzinfo=UTC)),
        ("2026-11-20T15:00:00", datetime(2026, 11, 20, 15, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-20T10:00:00-05:00", datetime(2026, 11, 20, 15, tzinfo=UTC)),
        ("2026-11-20T15:00:00.123456789Z", datetime(2026, 11, 20, 15, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),  # a date: its first instant
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-02-30", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_datetime(text: str | None, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_offsets_are_kept_aware() -> None:
    parsed = parse_datetime("2026-11-20T10:00:00+05:30")
    assert parsed is not None and parsed.utcoffset() == timedelta(hours=5, minutes=30)
    assert parsed.tzinfo == timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        ("2008-11-20", date(2026, 11, 20), 18),  # birthday today
        ("2008-11-21", date(2026, 11, 20), 17),
        ("2008-11", date(2026, 11, 20), 17),  # could be the 30th: youngest reading
        ("2008", date(2026, 11, 20), 17),
        ("2008", date(2027, 1, 1), 18),
        ("2008-02-29", date(2026, 2, 28), 17),
        ("2008-02-29", date(2026, 3, 1), 18),
    ],
)
def test_age_uses_the_youngest_reading(birth: str, on: date, age: int) -> None:
    born = youngest_birth_date(birth)
    assert born is not None and age_in_years(born, on) == age


def test_unparseable_birth_date_is_unknown() -> None:
    assert youngest_birth_date("soon") is None
    assert youngest_birth_date(None) is None


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Condition/abc", "Condition/abc"),
        ("https://ehr.example/fhir/R4/Condition/abc", "Condition/abc"),
        ("Condition/abc/_history/3", "Condition/abc"),
        ("urn:uuid:0b90d110-2fb9-5ce5-ac99-215ff2eb6f6f", None),
        ("#med1", None),
        ("abc", None),
    ],
)
def test_type_id_of(ref: str, expected: str | None) -> None:
    assert type_id_of(ref) == expected


def test_parse_datetime_remembers_texts_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts are parsed once (a population repeats them) and the memory stays bounded:
    each answer is what parsing gives, before and after the memory is emptied."""
    from smartapp.engine import fhir

    monkeypatch.setattr(fhir, "_PARSED", {})
    monkeypatch.setattr(fhir, "_PARSED_MAX", 8)
    texts = [f"2026-11-{day:02d}T10:00:00-05:00" for day in range(1, 21)] + ["2026-02-30", "x"]
    for text in texts * 2:
        assert parse_datetime(text) == fhir._parsed(text)
        assert len(fhir._PARSED) <= 8
    first = parse_datetime("2026-11-20T15:00:00Z")
    assert parse_datetime("2026-11-20T15:00:00Z") is first  # remembered, not parsed again
    assert parse_datetime("2026-02-30") is None and parse_datetime(20261120) is None

    class Text(str):
        pass

    assert parse_datetime(Text("2026-11-20")) == datetime(2026, 11, 20, tzinfo=UTC)
