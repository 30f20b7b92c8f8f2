"""The worklist's ED arrival time: the EHR's instant in the program's time zone, with the zone
named (the page once cut the string, keeping the digits of whatever offset the EHR used and
dropping the offset, while the supervisor page showed local times)."""

from __future__ import annotations

import dataclasses

import pytest

from smartapp.staff.worklist import Item

pytestmark = pytest.mark.unit


def item(start: str | None) -> Item:
    fields = {f.name: None for f in dataclasses.fields(Item)}
    return Item(**(fields | {"encounter_start": start}))


@pytest.mark.parametrize(
    ("start", "shown"),
    [
        ("2026-12-02T06:10:00Z", "2026-12-02 01:10 EST"),
        ("2026-12-02T06:10:00+00:00", "2026-12-02 01:10 EST"),
        ("2026-07-02T08:10:00-07:00", "2026-07-02 11:10 EDT"),
        ("2026-12-02T06:10:00", "2026-12-02 06:10"),  # no offset: as the EHR gave it
        ("sometime", "sometime"),
        (None, ""),
    ],
)
def test_arrival_in_the_program_zone(start, shown):
    assert item(start).arrived("America/New_York") == shown
