"""Equal by construction: for every public chart, what the CDS card offers (suggestion kinds,
variants, cautions, evidence; withheld kinds and reasons) equals what the launch screen shows,
because both come from the same call (`screen.service.shown_from_read`, the engine's
`evaluate`) on the same chart: the card's chart assembled from a prefetch of the chart, the
screen's as the launch reads it. Evaluated at the scenarios' `now`."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from smartapp.cdshooks import cards, prefetch
from smartapp.config import Defaults
from smartapp.engine import default_pack_path, load_pack
from smartapp.fhir.chart import ChartLimits, ChartRead
from smartapp.screen.service import ScreenSettings, shown_from_read
from tests.shared import SCENARIOS_DIR

EXPECTED = json.loads((SCENARIOS_DIR / "expected.json").read_text())
NOW = datetime.fromisoformat(EXPECTED["now"].replace("Z", "+00:00"))
SETTINGS = ScreenSettings.from_config(
    {k: getattr(Defaults, k) for k in dir(Defaults) if k.isupper()}
)
PACK = load_pack(default_pack_path())
CARD = cards.CardSettings(
    card_id="9368d37b-283f-44a0-93ea-547cebab93ed",
    visit_key="visit",
    launch_url="https://handoff.example/launch",
    indicator="warning",
    override_system="urn:handoff:decline-reason",
)


def chart(name: str) -> list[dict]:
    bundle = json.loads((SCENARIOS_DIR / f"{name}.json").read_text())
    return [e["resource"] for e in bundle["entry"]]


def as_prefetch(resources: list[dict], patient: str) -> dict:
    """The chart as a CDS client prefetches it with Handoff's templates."""
    found: dict = {}
    for key, (rtype, _template) in prefetch.TEMPLATES.items():
        matching = [r for r in resources if r["resourceType"] == rtype]
        if rtype == "Patient":
            found[key] = next((r for r in matching if r["id"] == patient), None)
        else:
            found[key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in matching],
            }
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED["cases"]))
def test_the_card_offers_what_the_screen_shows(name):
    case = EXPECTED["cases"][name]
    patient, encounter = case["patient"], case["encounter"]
    resources = chart(name)
    screen = shown_from_read(
        ChartRead(resources=resources), [], PACK, SETTINGS, NOW, encounter, patient, []
    )
    found = prefetch.read_prefetch(as_prefetch(resources, patient), patient)
    assert found.missing == []
    read = prefetch.chart_of(found, None, patient, encounter, NOW, 30, ChartLimits(), (1.0, 1.0))
    card_shown = shown_from_read(read, [], PACK, SETTINGS, NOW, encounter, patient, [])
    assert cards.offer_of(card_shown) == cards.offer_of(screen)
    assert card_shown["notices"] == screen["notices"]
    if screen["suggestions"]:
        card = cards.build_card(card_shown, {}, CARD, cards.pack_label(card_shown))
        assert card.extension == {"handoff-offer": cards.offer_of(screen)}
        assert [s.label for s in card.suggestions or []] == [
            s["title"] for s in screen["suggestions"]
        ]
    # and the offer is the expected one
    assert {s["kind"] for s in screen["suggestions"]} == {e["kind"] for e in case["expected"]}
    assert {(w["kind"], w["reason"]) for w in screen["withheld"]} == {
        (w["kind"], w["reason"]) for w in case.get("withheld", [])
    }
