"""The screen service's pure parts, without a server: settings and the program chosen."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from smartapp.fhir.client import ChartLimits
from smartapp.screen import service
from smartapp.screen.decisions import parse_form

pytestmark = pytest.mark.unit


@dataclass
class Program:
    name: str
    phone: str


class Catalog:
    def get(self, program_id: str) -> Program:
        if program_id != "p1":
            raise KeyError(program_id)
        return Program("Harbor Recovery", "555-0100")


@dataclass
class FakeServices:
    catalog: Catalog | None


SHOWN: dict = {"suggestions": []}


def test_settings_are_read_from_the_configuration():
    config = {
        "CHART_OBSERVATION_DAYS": 30,
        "RESOURCE_TEXT_MAX_CHARS": 2000,
        "CHART_MAX_NOTICES": 5,
        "CHART_MAX_BYTES": 1024,
        "CHART_MAX_RESOURCES": 10,
        "REFERRAL_IDENTIFIER_SYSTEM": "urn:test",
    }
    settings = service.ScreenSettings.from_config(config)
    assert settings.chart_limits == ChartLimits(1024, 10)
    assert (settings.observation_days, settings.identifier_system) == (30, "urn:test")


@pytest.mark.parametrize(
    ("fields", "catalog", "words"),
    [
        ({"program": "p1"}, Catalog(), "Harbor Recovery (555-0100)"),
        ({"program": "p1", "program-other": "Elsewhere"}, Catalog(), "Harbor Recovery (555-0100)"),
        ({"program": "gone", "program-other": " Elsewhere "}, Catalog(), "Elsewhere"),
        ({"program": "p1", "program-other": "Elsewhere"}, None, "Elsewhere"),
        ({}, Catalog(), None),
    ],
)
def test_the_program_is_the_catalogs_else_the_one_typed(fields, catalog, words):
    form = parse_form(fields, SHOWN)
    services = FakeServices(catalog)  # a stand-in: chosen_program reads only the catalog
    assert service.chosen_program(services, form) == words  # type: ignore[arg-type]
