"""The hours text shown on the screen."""

from __future__ import annotations

from datetime import time

import pytest

from smartapp.catalog import Window, hours_text, load_catalog

from .helpers import SAMPLE

WEEKDAYS = (0, 1, 2, 3, 4)


def test_sample_hours_text() -> None:
    catalog = load_catalog(SAMPLE)
    assert {p.id: p.hours for p in catalog.programs()} == {
        "bridge-clinic": "Mon-Fri 08:00-17:00; Sat 09:00-12:00",
        "bridge-naltrexone": "Tue, Thu 13:00-17:00",
        "bridge-telehealth": "Daily 07:00-23:00",
        "riverside-methadone": "Mon-Fri 05:30-13:00; Sat-Sun 07:00-10:00",
        "riverside-residential": "Mon-Fri 09:00-17:00",
        "collective-syringe-services": "Tue, Thu 10:00-16:00; Sat 10:00-14:00",
        "collective-naloxone-outreach": "Mon, Wed, Fri 16:00-20:00",
        "recovery-center-peer-support": "Mon-Fri 09:00-19:00; Sat 10:00-14:00",
        "recovery-warmline": "Daily 24 hours",
        "harbor-house-residential": "Daily 24 hours",
    }


@pytest.mark.parametrize(
    ("windows", "text"),
    [
        # two sessions a day, listed out of order
        (
            [Window(WEEKDAYS, time(13), time(17)), Window(WEEKDAYS, time(8), time(12))],
            "Mon-Fri 08:00-12:00, 13:00-17:00",
        ),
        # the same hours on separate runs of days share one entry
        (
            [Window((0, 1, 3, 4), time(9), time(17)), Window((2,), time(12), time(17))],
            "Mon-Tue, Thu-Fri 09:00-17:00; Wed 12:00-17:00",
        ),
        # all day wins over shorter hours on the same day; seconds shown only when set
        (
            [Window((5, 6), time.min, None), Window((6,), time(9), time(10, 30, 15))],
            "Sat-Sun 24 hours",
        ),
        ([Window((1,), time(9), time(10, 30, 15))], "Tue 09:00-10:30:15"),
        ([], "No regular hours"),
    ],
)
def test_hours_text(windows: list[Window], text: str) -> None:
    assert hours_text(windows) == text
