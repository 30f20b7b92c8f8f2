"""Broken catalog data is refused with every problem, each naming its file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartapp.catalog import CatalogError, load_catalog

from .helpers import (
    BRIDGE_CLINIC,
    BRIDGE_LOCATION,
    BRIDGE_ORG,
    METHADONE,
    NALTREXONE,
    at,
    copy_sample,
    edit,
    problems,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return copy_sample(tmp_path)


def hours_line(**fields) -> list[dict]:
    return [{"daysOfWeek": ["mon"], **fields}]


# --- FHIR R4 structure ---


def test_unknown_element(folder: Path) -> None:
    edit(folder, BRIDGE_CLINIC, lambda d: d.update(colour="blue"))
    edit(folder, NALTREXONE, lambda d: d["availableTime"][0].update(opens="13:00:00"))
    found = problems(folder)
    assert at(found, BRIDGE_CLINIC, "colour") == [
        "unknown element: not part of FHIR R4 HealthcareService"
    ]
    [nested] = at(found, NALTREXONE, "availableTime[0].opens")
    assert nested.startswith("unknown element: not part of FHIR R4 HealthcareServiceAvailableTime")
    assert len(found) == 2


def test_unknown_element_suggests_the_close_one(folder: Path) -> None:
    edit(folder, BRIDGE_CLINIC, lambda d: d.update(telecoms=d.pop("telecom")))
    found = problems(folder)
    assert "(did you mean 'telecom'?)" in at(found, BRIDGE_CLINIC, "telecoms")[0]
    assert at(found, BRIDGE_CLINIC, "telecom") == [
        'needs a phone: {"system": "phone", "value": "..."}'
    ]


def test_bad_types(folder: Path) -> None:
    def change(d: dict) -> None:
        d["appointmentRequired"] = "no"
        d["name"] = 5
        d["location"] = {"reference": "Location/bridge-main-campus"}
        d["telecom"][0]["value"] = None

    edit(folder, BRIDGE_CLINIC, change)
    found = problems(folder)
    assert at(found, BRIDGE_CLINIC, "appointmentRequired") == [
        "expected true or false, got a string"
    ]
    # reported once, by the FHIR check, not again by the conventions
    assert at(found, BRIDGE_CLINIC, "name") == ["expected a string, got a number"]
    assert at(found, BRIDGE_CLINIC, "location") == ["expected an array, got an object"]
    assert at(found, BRIDGE_CLINIC, "telecom[0].value") == [
        "null is not allowed in FHIR JSON (leave the element out)"
    ]


def test_bad_fhir_date_and_empty_values(folder: Path) -> None:
    def change(d: dict) -> None:
        d["notAvailable"] = [{"description": "Holiday", "during": {"start": "2030-02-30"}}]
        d["comment"] = "  "
        d["characteristic"] = []

    edit(folder, BRIDGE_CLINIC, change)
    found = problems(folder)
    assert at(found, BRIDGE_CLINIC, "notAvailable[0].during.start") == [
        "'2030-02-30' is not a valid FHIR dateTime (YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss+zz:zz)"
    ]
    assert at(found, BRIDGE_CLINIC, "comment")[0].startswith("empty string is not allowed")
    assert at(found, BRIDGE_CLINIC, "characteristic")[0].startswith("empty array is not allowed")


def test_required_fhir_element_missing(folder: Path) -> None:
    edit(folder, METHADONE, lambda d: d["notAvailable"][0].pop("description"))
    assert at(problems(folder), METHADONE, "notAvailable[0].description") == [
        "required element is missing"
    ]


def test_resource_type_outside_the_catalog(folder: Path) -> None:
    (folder / "practitioner.json").write_text('{"resourceType": "Practitioner", "id": "p1"}')
    (folder / "list.json").write_text("[]")
    found = problems(folder)
    assert at(found, "practitioner.json", "resourceType") == [
        "'Practitioner' is not one of Organization, Location, HealthcareService"
    ]
    assert at(found, "list.json", "") == [
        "expected one FHIR resource (a JSON object), got an array"
    ]


# --- Handoff conventions ---


def test_missing_phone(folder: Path) -> None:
    edit(
        folder,
        BRIDGE_CLINIC,
        lambda d: d.update(telecom=[{"system": "url", "value": "https://a.example.org"}]),
    )
    edit(folder, NALTREXONE, lambda d: d.pop("telecom"))
    edit(folder, METHADONE, lambda d: d["telecom"][0].update(value="call the front desk"))
    found = problems(folder)
    needs_phone = ['needs a phone: {"system": "phone", "value": "..."}']
    assert at(found, BRIDGE_CLINIC, "telecom") == needs_phone
    assert at(found, NALTREXONE, "telecom") == needs_phone
    assert at(found, METHADONE, "telecom[0].value") == [
        "'call the front desk' does not look like a phone number"
    ]


def test_unresolved_provided_by_and_location(folder: Path) -> None:
    edit(folder, BRIDGE_CLINIC, lambda d: d["providedBy"].update(reference="Organization/nope"))
    edit(folder, NALTREXONE, lambda d: d["location"][0].update(reference="Location/gone"))
    edit(
        folder,
        BRIDGE_LOCATION,
        lambda d: d["managingOrganization"].update(reference="Organization/x"),
    )
    found = problems(folder)
    [message] = at(found, BRIDGE_CLINIC, "providedBy.reference")
    assert message.startswith("Organization/nope is not in the catalog")
    assert "example-bridge-health" in message  # lists the ids that exist
    [message] = at(found, NALTREXONE, "location[0].reference")
    assert message.startswith("Location/gone is not in the catalog")
    assert at(found, BRIDGE_LOCATION, "managingOrganization.reference")[0].startswith(
        "Organization/x is not in the catalog"
    )


def test_malformed_or_missing_provided_by(folder: Path) -> None:
    edit(folder, BRIDGE_CLINIC, lambda d: d["providedBy"].update(reference="Organisation/a"))
    edit(folder, NALTREXONE, lambda d: d.pop("providedBy"))
    found = problems(folder)
    assert at(found, BRIDGE_CLINIC, "providedBy.reference") == [
        "'Organisation/a' must look like 'Organization/<id>' (an Organization in the catalog)"
    ]
    assert at(found, NALTREXONE, "providedBy") == [
        'required: {"reference": "Organization/<id>"} of the provider'
    ]


def test_unknown_service_code(folder: Path) -> None:
    edit(folder, BRIDGE_CLINIC, lambda d: d["type"][0]["coding"][0].update(code="bupe"))
    [message] = at(problems(folder), BRIDGE_CLINIC, "type[0].coding[0].code")
    assert message.startswith("'bupe' is not a code of urn:handoff:catalog:service-type")
    assert "methadone-program" in message  # lists the valid codes


def test_no_local_service_type(folder: Path) -> None:
    other = {"coding": [{"system": "http://example.org/other", "code": "x"}]}
    edit(folder, BRIDGE_CLINIC, lambda d: d.update(type=[other]))
    edit(folder, NALTREXONE, lambda d: d.pop("type"))
    found = problems(folder)
    for file in (BRIDGE_CLINIC, NALTREXONE):
        [message] = at(found, file, "type")
        assert message.startswith("needs at least one coding from urn:handoff:catalog:service-type")


def test_display_must_match_the_code(folder: Path) -> None:
    edit(folder, BRIDGE_CLINIC, lambda d: d["type"][0]["coding"][0].update(display="Methadone"))
    assert at(problems(folder), BRIDGE_CLINIC, "type[0].coding[0].display") == [
        "display of 'buprenorphine' must be 'Buprenorphine (office-based or bridge clinic)' "
        "(or leave it out)"
    ]


def test_characteristic_codes(folder: Path) -> None:
    def change(d: dict) -> None:
        d["characteristic"][0]["coding"][0] = {
            "system": "urn:handoff:catalog:characteristic",
            "code": "walk-in",
        }
        d["characteristic"][1]["coding"][0]["code"] = "open-late"

    edit(folder, BRIDGE_CLINIC, change)
    found = problems(folder)
    assert "appointmentRequired" in at(found, BRIDGE_CLINIC, "characteristic[0].coding[0].code")[0]
    assert at(found, BRIDGE_CLINIC, "characteristic[1].coding[0].code")[0].startswith(
        "'open-late' is not a code of urn:handoff:catalog:characteristic"
    )


@pytest.mark.parametrize(
    ("hours", "path", "message"),
    [
        (
            [{"daysOfWeek": ["monday"], "allDay": True}],
            "availableTime[0].daysOfWeek[0]",
            "'monday' is not allowed; expected 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun'",
        ),
        (
            hours_line(availableStartTime="8:00", availableEndTime="17:00:00"),
            "availableTime[0].availableStartTime",
            "'8:00' is not a valid FHIR time (hh:mm:ss)",
        ),
        (
            hours_line(availableStartTime="17:00:00", availableEndTime="08:00:00"),
            "availableTime[0].availableEndTime",
            "closing time 08:00:00 is not after opening time 17:00:00 "
            "(for hours past midnight, add a second line for the next day)",
        ),
        (
            hours_line(availableStartTime="08:00:00"),
            "availableTime[0].availableEndTime",
            'required: the closing time (hh:mm:ss), or set "allDay": true',
        ),
        (
            hours_line(allDay=True, availableStartTime="08:00:00"),
            "availableTime[0].availableStartTime",
            "leave out opening/closing times when allDay is true",
        ),
        (
            [{"allDay": True}],
            "availableTime[0].daysOfWeek",
            'required: the days these hours apply to, e.g. ["mon", "tue"]',
        ),
        (
            [{"daysOfWeek": ["mon", "mon"], "allDay": True}],
            "availableTime[0].daysOfWeek",
            "lists a day more than once",
        ),
        (
            [],
            "availableTime",
            "empty array is not allowed in FHIR (leave the element out)",
        ),
        (None, "availableTime", "required: the opening hours (at least one line)"),
    ],
)
def test_malformed_available_time(
    folder: Path, hours: list[dict] | None, path: str, message: str
) -> None:
    def change(d: dict) -> None:
        if hours is None:
            d.pop("availableTime")
        else:
            d["availableTime"] = hours

    edit(folder, BRIDGE_CLINIC, change)
    found = problems(folder)
    assert at(found, BRIDGE_CLINIC, path) == [message]
    assert len(found) == 1


def test_closure_ending_before_it_starts(folder: Path) -> None:
    edit(folder, METHADONE, lambda d: d["notAvailable"][0]["during"].update(end="2030-01-10"))
    assert at(problems(folder), METHADONE, "notAvailable[0].during.end") == [
        "the closure ends before it starts"
    ]


def test_location_needs_an_address_and_names_are_not_blank(folder: Path) -> None:
    edit(folder, BRIDGE_LOCATION, lambda d: d.pop("address"))
    edit(folder, BRIDGE_ORG, lambda d: d.update(id="bad id!"))
    found = problems(folder)
    assert at(found, BRIDGE_LOCATION, "address") == [
        'required: an address with "text" or "line" (street)'
    ]
    assert at(found, BRIDGE_ORG, "id") == ["must be 1-64 letters, digits, '-' or '.' (a FHIR id)"]


def test_duplicate_ids(folder: Path) -> None:
    edit(folder, NALTREXONE, lambda d: d.update(id="bridge-clinic"))
    assert at(problems(folder), NALTREXONE, "id") == [
        f"duplicate HealthcareService id 'bridge-clinic' (also in {BRIDGE_CLINIC})"
    ]


# --- files and settings ---


def test_invalid_json_names_line_and_column(folder: Path) -> None:
    (folder / BRIDGE_CLINIC).write_text('{\n  "resourceType": "HealthcareService",\n}\n')
    assert at(problems(folder), BRIDGE_CLINIC, "") == [
        "not valid JSON: Expecting property name enclosed in double quotes (line 3, column 1)"
    ]


def test_key_written_twice(folder: Path) -> None:
    text = (folder / BRIDGE_CLINIC).read_text()
    (folder / BRIDGE_CLINIC).write_text(
        text.replace('"active": true', '"active": true, "active": false')
    )
    assert at(problems(folder), BRIDGE_CLINIC, "") == ["key 'active' appears twice in one object"]


def test_bad_settings(folder: Path) -> None:
    (folder / "catalog.json").write_text(json.dumps({"timezone": "Mars/Olympus", "zone": 1}))
    found = problems(folder)
    assert at(found, "catalog.json", "timezone") == [
        "'Mars/Olympus' is not an IANA time zone (e.g. America/New_York)"
    ]
    assert at(found, "catalog.json", "zone") == ["Extra inputs are not permitted"]


def test_missing_folder_and_catalog_without_programs(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog folder not found"):
        load_catalog(tmp_path / "nowhere")
    (tmp_path / "org.json").write_text('{"resourceType": "Organization", "id": "o", "name": "O"}')
    assert at(problems(tmp_path), ".", "") == ["the catalog has no HealthcareService (no programs)"]


def test_hidden_and_non_json_files_are_ignored(folder: Path) -> None:
    (folder / ".drafts").mkdir()
    (folder / ".drafts" / "half-done.json").write_text("{ not json")
    (folder / "notes.txt").write_text("call back Tuesday")
    assert len(load_catalog(folder).programs()) == 10


# --- every problem at once ---


def test_every_problem_is_reported_at_once(folder: Path) -> None:
    def break_clinic(d: dict) -> None:
        d["colour"] = "blue"  # unknown element
        d["appointmentRequired"] = "no"  # bad type
        d["telecom"] = [{"system": "email", "value": "a@example.org"}]  # no phone
        d["type"][0]["coding"][0]["code"] = "bupe"  # unknown service code
        d["availableTime"][0]["daysOfWeek"] = ["monday"]  # bad day
        d["availableTime"][1]["availableEndTime"] = "08:00:00"  # closes before it opens

    edit(folder, BRIDGE_CLINIC, break_clinic)
    edit(folder, NALTREXONE, lambda d: d["providedBy"].update(reference="Organization/nope"))
    edit(folder, METHADONE, lambda d: d["availableTime"][1].pop("availableEndTime"))
    with pytest.raises(CatalogError) as raised:
        load_catalog(folder)
    error = raised.value
    assert {(p.file, p.path) for p in error.problems} == {
        (BRIDGE_CLINIC, "colour"),
        (BRIDGE_CLINIC, "appointmentRequired"),
        (BRIDGE_CLINIC, "telecom"),
        (BRIDGE_CLINIC, "type[0].coding[0].code"),
        (BRIDGE_CLINIC, "availableTime[0].daysOfWeek[0]"),
        (BRIDGE_CLINIC, "availableTime[1].availableEndTime"),
        (NALTREXONE, "providedBy.reference"),
        (METHADONE, "availableTime[1].availableEndTime"),
    }
    assert len(error.problems) == 8
    message = str(error)
    assert message.startswith(f"catalog {folder}: 8 problems\n")
    assert f"  {NALTREXONE}: providedBy.reference: Organization/nope" in message
    files = [p.file for p in error.problems]
    assert files == sorted(files)  # grouped by file for the reader
