"""Why and why not in words with the values (issue 13 items 2, 3, 5), from the labelled
scenario charts through the engine and the screen's description (pure: no server): the
variant's evidence, each caution with its evidence and meaning (the pack's words file), every
withheld kind with its reason and evidence, and the clinician's summary after Sign."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from smartapp.engine import Chart, evaluate, load_pack
from smartapp.screen.shown import describe_evaluation
from smartapp.screen.signed import summary
from tests.shared import SHARED_DIR

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SCENARIOS = SHARED_DIR / "scenarios"


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def shown_for(pack, patient: str) -> dict:
    path = next(SCENARIOS.glob(f"{patient}-*.json"))
    chart = Chart.from_bundle(json.loads(path.read_text(encoding="utf-8")))
    evaluation = evaluate(chart, NOW, pack, encounter_id=f"{patient}-enc")
    return describe_evaluation(evaluation, chart, pack, NOW, [], f"{patient}-pt", [])


def card(shown: dict, kind: str) -> dict:
    return next(s for s in shown["suggestions"] if s["kind"] == kind)


def test_the_variant_says_the_cows_that_chose_it(pack):
    shown = shown_for(pack, "P01")
    bup = card(shown, "moud-buprenorphine")
    assert bup["variant_words"]["why"] == "ED start because COWS >= 8"
    assert [e["says"] for e in bup["variant_words"]["evidence"]] == ["COWS total score 11 at 13:00"]
    assert shown["summary"] == (
        "Offer: peer recovery coach (opt-out), buprenorphine ED start, naloxone kit"
    )
    # A diagnosis without a display is named by the pack value set that holds its code.
    assert bup["evidence"][0]["says"].startswith("Active opioid use disorder diagnosis (F11.20)")


def test_home_start_says_the_threshold_it_missed(pack):
    bup = card(shown_for(pack, "P02"), "moud-buprenorphine")
    assert bup["variant_words"] == {
        "short": "home start",
        "why": "Home start: no COWS of 8 or more this visit",
        "evidence": [],
    }


def test_each_caution_says_its_evidence_and_what_it_means(pack):
    (pregnancy,) = card(shown_for(pack, "P14"), "moud-buprenorphine")["caution_details"]
    assert pregnancy["label"] == "Pregnant"
    assert "problem list" in pregnancy["evidence"][0]["says"]
    assert "not a block" in pregnancy["means"] and "mg" not in pregnancy["means"]
    (confirm,) = card(shown_for(pack, "P25"), "moud-buprenorphine")["caution_details"]
    assert "confirm the DSM-5 OUD criteria" in confirm["means"]
    assert "T40.2X1A" in confirm["evidence"][0]["says"]


@pytest.mark.parametrize(
    ("patient", "kinds", "words"),
    [
        ("P03", ["Buprenorphine"], "already on Methadone (864706), order of 2026\u201110\u201121"),
        ("P07", ["Buprenorphine"], "buprenorphine allergy on the chart"),
        ("P08", ["Peer recovery coach"], "under the age the rules set for it"),
        ("P10", ["Peer recovery coach"], "coach already requested this visit at 13:00"),
        (
            "P16",
            ["Peer recovery coach", "Buprenorphine", "Naloxone kit"],
            "recorded as deceased",
        ),
    ],
)
def test_why_not_in_words_with_the_evidence(pack, patient, kinds, words):
    shown = shown_for(pack, patient)
    (line,) = shown["withheld_lines"]  # kinds withheld for one reason share one line
    assert line["kinds"] == kinds
    assert line["words"] == words


def test_the_signed_summary_says_what_is_left_to_do():
    referral = SimpleNamespace(
        status="written",
        written=[
            {"resourceType": t, "id": str(n), "status": "201 Created"}
            for n, t in enumerate(
                ["ServiceRequest", "Task", "MedicationRequest", "MedicationRequest", "Provenance"]
            )
        ],
        kept=[],
        decision={
            "decisions": [
                {"kind": k, "accepted": True}
                for k in ("prc-consult", "moud-buprenorphine", "naloxone-kit")
            ]
        },
    )
    after = summary(referral)
    assert "draft buprenorphine and naloxone kit orders, without a dose" in after["chart"]
    assert after["todo"] == [
        "Complete and sign the draft buprenorphine and naloxone kit orders in the EHR: "
        "Handoff drafts carry no dose."
    ]
    # An EHR that takes no referral order from apps: the physician orders it there.
    referral.written = [w for w in referral.written if w["resourceType"] == "Provenance"]
    referral.kept = [{"type": "ServiceRequest"}, {"type": "Task"}]
    after = summary(referral)
    assert any(line.startswith("Order the coach consult in the EHR") for line in after["todo"])
    assert any(line.startswith("Order buprenorphine and naloxone kit") for line in after["todo"])
    assert "The coach team's task is on their worklist in Handoff." in after["queued"]
