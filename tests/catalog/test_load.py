"""The sample catalog loads, and its programs carry what the screen and the referral need."""

from __future__ import annotations

import re

import pytest
from fhirclient.models.healthcareservice import HealthcareService

from smartapp.catalog import SERVICE_TYPES, Catalog, Program, fhir_problems, load_catalog

from .helpers import SAMPLE, read


@pytest.fixture(scope="module")
def sample() -> Catalog:
    return load_catalog(SAMPLE)


def test_sample_loads_with_counts_and_settings(sample: Catalog) -> None:
    assert sample.counts() == {"Organization": 4, "Location": 6, "HealthcareService": 10}
    assert sample.timezone == "America/New_York"
    assert sample.name == "Sample catalog (fictional programs)"
    assert len(sample.programs()) == 10


def test_sample_covers_every_service_type(sample: Catalog) -> None:
    offered = {code for program in sample.programs() for code in program.services}
    assert offered == set(SERVICE_TYPES)


def test_program_fields_from_the_bridge_clinic(sample: Catalog) -> None:
    program = sample.get("bridge-clinic")
    assert program == Program(
        id="bridge-clinic",
        name="Example Bridge Clinic",
        organization="Example Bridge Health",
        organization_id="example-bridge-health",
        services=("buprenorphine",),
        service_labels=("Buprenorphine (office-based or bridge clinic)",),
        phone="(555) 555-0111",
        address="100 Example Avenue, Sampleton, ZZ 00001",
        hours="Mon-Fri 08:00-17:00; Sat 09:00-12:00",
        accepting_new=True,
        telehealth=False,
        walk_in=True,
        same_day_bup=True,
        active=True,
        timezone="America/New_York",
        comment=program.comment,
        availability_exceptions=None,
        windows=program.windows,
        closures=(),
    )
    assert "Same-day buprenorphine" in (program.comment or "")


def test_program_flags_follow_the_conventions(sample: Catalog) -> None:
    residential = sample.get("riverside-residential")
    assert not residential.accepting_new  # no accepting-new-patients characteristic
    assert not residential.walk_in  # appointmentRequired: true
    tele = sample.get("bridge-telehealth")
    assert tele.telehealth and tele.address is None and not tele.walk_in  # not stated
    assert sample.get("recovery-warmline").telehealth  # by characteristic only
    assert sample.get("riverside-methadone").services == ("methadone-program", "buprenorphine")


def test_reference_for_the_referral(sample: Catalog) -> None:
    assert sample.get("riverside-methadone").reference() == {
        "reference": "HealthcareService/riverside-methadone",
        "display": "Example Riverside Opioid Treatment Program",
    }


def test_get_unknown_program_raises_key_error(sample: Catalog) -> None:
    with pytest.raises(KeyError, match="no-such-program"):
        sample.get("no-such-program")


def test_program_is_frozen(sample: Catalog) -> None:
    with pytest.raises(AttributeError):
        sample.get("bridge-clinic").phone = "911"  # type: ignore[misc]


def test_resources_are_parsed_fhirclient_models(sample: Catalog) -> None:
    model = sample.resource("HealthcareService/bridge-clinic")
    assert isinstance(model, HealthcareService)
    assert model.availableTime[0].daysOfWeek == ["mon", "tue", "wed", "thu", "fri"]
    assert model.availableTime[0].availableStartTime.isostring == "08:00:00"
    assert model.providedBy.reference == "Organization/example-bridge-health"


def test_every_sample_file_is_clean_fhir() -> None:
    for path in sorted(SAMPLE.rglob("*.json")):
        if path.name != "catalog.json":
            assert fhir_problems(read(SAMPLE, str(path.relative_to(SAMPLE)))) == [], path


def test_sample_is_fictional() -> None:
    """Only 555-01xx phone numbers and example.org web addresses: nothing real."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in SAMPLE.rglob("*.json"))
    phones = re.findall(r'"system": "phone",\s*"value": "([^"]+)"', text)
    assert phones and all(re.fullmatch(r"\(555\) 555-01\d\d", phone) for phone in phones)
    urls = re.findall(r"https?://[^\"\s]+", text)
    web = [u for u in urls if not u.startswith(("http://terminology.hl7.org/", "urn:"))]
    assert web and all(re.match(r"https://[a-z-]+\.example\.org", url) for url in web)
    names = re.findall(r'"name": "([^"]+)"', text)
    assert all(name.startswith(("Example", "Sample")) for name in names)
