"""The screen service's pure parts, without a server: settings, the program chosen, and what
the physician sees for a chart as read."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from smartapp.engine import kinds, load_pack
from smartapp.fhir.client import ChartLimits, ChartRead
from smartapp.screen import service
from smartapp.screen.decisions import parse_form
from tests.engine.helpers import EXPECTED, NOW, RULES, SCENARIOS

pytestmark = pytest.mark.unit


class Catalog:
    """A stand-in for smartapp.catalog.Catalog's words for a program id."""

    def label(self, program_id: str) -> str | None:
        return "Harbor Recovery (555-0100)" if program_id == "p1" else None


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


def scenario_read(name: str) -> ChartRead:
    bundle = json.loads((SCENARIOS / f"{name}.json").read_text())
    return ChartRead(resources=[entry["resource"] for entry in bundle["entry"]])


SETTINGS = service.ScreenSettings(
    observation_days=30,
    text_max_chars=1000,
    max_notices=20,
    chart_limits=ChartLimits(),
    identifier_system="urn:test",
)


def test_a_chart_as_read_is_shown_as_the_engine_decides():
    """P01: the three suggestions of the spec, opioid-labelled, with nothing unread."""
    case = EXPECTED["cases"]["P01-oud-withdrawal"]
    shown = service.shown_from_read(
        scenario_read("P01-oud-withdrawal"),
        [],
        load_pack(RULES / "packs" / "default.yaml"),
        SETTINGS,
        NOW,
        encounter_id=case["encounter"],
        patient_id=case["patient"],
        missing_writes=[],
    )
    assert [s["kind"] for s in shown["suggestions"]] == [e["kind"] for e in case["expected"]]
    bup = shown["suggestions"][1]
    assert bup["variant"] == "ed-induction"
    assert "Condition/P01-cond1" in [e["reference"] for e in bup["evidence"]]
    assert shown["opioid"] is True
    assert (shown["notices"], shown["notice_codes"], shown["can_write"]) == ([], [], True)
    assert shown["encounter"]["id"] == case["encounter"]


def test_types_the_scopes_do_not_allow_are_the_engines_input():
    """Without MedicationRequest, buprenorphine is still suggested, with the caution and the
    notice the engine gives (rules v2): the screen adds nothing and removes nothing."""
    case = EXPECTED["cases"]["P01-oud-withdrawal"]
    shown = service.shown_from_read(
        scenario_read("P01-oud-withdrawal"),
        ["MedicationRequest"],
        load_pack(RULES / "packs" / "default.yaml"),
        SETTINGS,
        NOW,
        encounter_id=case["encounter"],
        patient_id=case["patient"],
        missing_writes=["ServiceRequest"],
    )
    bup = next(s for s in shown["suggestions"] if s["kind"] == kinds.MOUD_BUPRENORPHINE)
    assert "chart-incomplete" in bup["cautions"]
    assert shown["notice_codes"] == ["chart-incomplete"]
    assert shown["notices"][0].startswith("The EHR did not let Handoff read: MedicationRequest")
    assert shown["can_write"] is False
