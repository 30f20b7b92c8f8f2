"""Catalog.programs filters and Program.open_now, in the catalog's time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from smartapp.catalog import Catalog, load_catalog

from .helpers import BRIDGE_CLINIC, BRIDGE_ORG, SAMPLE, copy_sample, edit

NEW_YORK = ZoneInfo("America/New_York")
MONDAY_10 = datetime(2030, 1, 14, 10, 0, tzinfo=NEW_YORK)
SUNDAY_03 = datetime(2030, 1, 13, 3, 0, tzinfo=NEW_YORK)


@pytest.fixture(scope="module")
def sample() -> Catalog:
    return load_catalog(SAMPLE)


def ids(programs) -> set[str]:
    return {program.id for program in programs}


def test_filter_by_service(sample: Catalog) -> None:
    assert ids(sample.programs(service="buprenorphine")) == {
        "bridge-clinic",
        "bridge-telehealth",
        "riverside-methadone",
    }
    assert ids(sample.programs(service="methadone-program")) == {"riverside-methadone"}
    assert ids(sample.programs(service="naloxone-distribution")) == {
        "collective-syringe-services",
        "collective-naloxone-outreach",
    }
    assert ids(sample.programs(service="residential")) == {
        "riverside-residential",
        "harbor-house-residential",
    }


def test_unknown_service_code_is_an_error_not_an_empty_list(sample: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown service 'bupe'"):
        sample.programs(service="bupe")


def test_filter_by_accepting_new(sample: Catalog) -> None:
    assert ids(sample.programs(accepting_new=False)) == {"riverside-residential"}
    assert len(sample.programs(accepting_new=True)) == 9
    assert ids(sample.programs(service="residential", accepting_new=True)) == {
        "harbor-house-residential"
    }


def test_filter_by_telehealth(sample: Catalog) -> None:
    assert ids(sample.programs(telehealth=True)) == {"bridge-telehealth", "recovery-warmline"}
    assert "bridge-telehealth" not in ids(sample.programs(telehealth=False))


def test_open_monday_morning(sample: Catalog) -> None:
    assert ids(sample.programs(open_at=MONDAY_10)) == {
        "bridge-clinic",
        "bridge-telehealth",
        "riverside-methadone",
        "riverside-residential",
        "recovery-center-peer-support",
        "recovery-warmline",
        "harbor-house-residential",
    }


def test_open_sunday_3am_only_24_hour_programs(sample: Catalog) -> None:
    assert ids(sample.programs(open_at=SUNDAY_03)) == {
        "recovery-warmline",
        "harbor-house-residential",
    }


def test_filters_combine(sample: Catalog) -> None:
    found = sample.programs(service="buprenorphine", accepting_new=True, open_at=SUNDAY_03)
    assert found == []
    found = sample.programs(service="buprenorphine", telehealth=False, open_at=MONDAY_10)
    assert ids(found) == {"bridge-clinic", "riverside-methadone"}


def test_results_sorted_by_name(sample: Catalog) -> None:
    names = [program.name for program in sample.programs()]
    assert names == sorted(names, key=str.casefold)


def test_open_now_converts_aware_times_and_reads_naive_as_local(sample: Catalog) -> None:
    clinic = sample.get("bridge-clinic")  # Mon-Fri 08:00-17:00 New York time
    assert clinic.open_now(datetime(2030, 1, 14, 15, 0, tzinfo=UTC))  # 10:00 EST
    assert not clinic.open_now(datetime(2030, 1, 14, 12, 30, tzinfo=UTC))  # 07:30 EST
    assert clinic.open_now(datetime(2030, 1, 14, 12, 30))  # naive: 12:30 local
    assert clinic.open_now(datetime(2030, 7, 15, 12, 30, tzinfo=UTC))  # 08:30 EDT (summer)


def test_open_now_boundaries(sample: Catalog) -> None:
    clinic = sample.get("bridge-clinic")
    assert clinic.open_now(datetime(2030, 1, 14, 8, 0, tzinfo=NEW_YORK))  # opening time
    assert not clinic.open_now(datetime(2030, 1, 14, 17, 0, tzinfo=NEW_YORK))  # closing time
    assert clinic.open_now(datetime(2030, 1, 19, 11, 59, tzinfo=NEW_YORK))  # Saturday
    assert not clinic.open_now(datetime(2030, 1, 19, 12, 0, tzinfo=NEW_YORK))


def test_closure_overrides_weekly_hours(sample: Catalog) -> None:
    """riverside-methadone is closed all of Tuesday 2030-01-15 (notAvailable, a bare date)."""
    otp = sample.get("riverside-methadone")
    assert not otp.open_now(datetime(2030, 1, 15, 8, 0, tzinfo=NEW_YORK))
    assert otp.open_now(datetime(2030, 1, 16, 5, 30, tzinfo=NEW_YORK))  # the next morning
    assert otp.open_now(datetime(2030, 1, 22, 8, 0, tzinfo=NEW_YORK))  # a week later
    assert "riverside-methadone" not in ids(
        sample.programs(open_at=datetime(2030, 1, 15, 8, 0, tzinfo=NEW_YORK))
    )


def test_open_ended_closure(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path)
    edit(
        folder,
        BRIDGE_CLINIC,
        lambda d: d.update(
            notAvailable=[
                {"description": "Moving", "during": {"start": "2030-01-14T12:00:00-05:00"}}
            ]
        ),
    )
    clinic = load_catalog(folder).get("bridge-clinic")
    assert clinic.open_now(datetime(2030, 1, 14, 11, 59, tzinfo=NEW_YORK))
    assert not clinic.open_now(datetime(2030, 1, 14, 12, 0, tzinfo=NEW_YORK))
    assert not clinic.open_now(datetime(2031, 3, 3, 10, 0, tzinfo=NEW_YORK))


def test_catalog_time_zone_setting_moves_the_hours(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path)
    edit(folder, "catalog.json", lambda d: d.update(timezone="America/Los_Angeles"))
    catalog = load_catalog(folder)
    clinic = catalog.get("bridge-clinic")
    assert catalog.timezone == clinic.timezone == "America/Los_Angeles"
    assert not clinic.open_now(MONDAY_10)  # 07:00 in Los Angeles
    assert clinic.open_now(datetime(2030, 1, 14, 10, 0))  # naive: Los Angeles local


def test_default_time_zone_without_settings_file(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path)
    (folder / "catalog.json").unlink()
    catalog = load_catalog(folder)
    assert catalog.timezone == "America/New_York"
    assert catalog.name == "catalog"  # the folder name


def test_inactive_programs_are_hidden_but_still_resolvable(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path)
    edit(folder, BRIDGE_CLINIC, lambda d: d.update(active=False))
    edit(folder, "example-riverside-treatment/organization.json", lambda d: d.update(active=False))
    catalog = load_catalog(folder)
    shown = ids(catalog.programs())
    assert "bridge-clinic" not in shown
    assert not shown & {"riverside-methadone", "riverside-residential"}
    assert len(shown) == 7
    assert catalog.get("bridge-clinic").active is False  # old referrals still resolve
    edit(folder, BRIDGE_ORG, lambda d: d.update(active=False))
    assert not ids(load_catalog(folder).programs()) & {"bridge-naltrexone", "bridge-telehealth"}
