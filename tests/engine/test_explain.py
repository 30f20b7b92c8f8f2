"""``rules explain``: why each kind was suggested, withheld or not triggered."""

from __future__ import annotations

import json

import pytest

from smartapp.engine import Pack
from smartapp.engine.explain import Node, explain, render

from .helpers import EXPECTED, NOW, SCENARIO_NAMES, SCENARIOS, run_cli, scenario_chart


def _find(node: Node, needle: str) -> Node:
    """The first node (depth first) whose label contains ``needle``."""
    if needle in node.label:
        return node
    for child in node.children:
        try:
            return _find(child, needle)
        except LookupError:
            continue
    raise LookupError(needle)


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_explanations_agree_with_the_evaluation(name: str, pack: Pack) -> None:
    case = EXPECTED["cases"][name]
    result = explain(scenario_chart(name), NOW, pack, case["encounter"])
    suggested = {s.kind: s for s in result.evaluation.suggestions}
    withheld = {w.kind: w for w in result.evaluation.withheld}
    assert [k.kind for k in result.kinds] == [r.kind for r in pack.rules]
    for k in result.kinds:
        assert k.trigger.value is (k.kind in suggested or k.kind in withheld)
        if k.kind in suggested:
            assert k.outcome == "suggested" and k.variant == suggested[k.kind].variant
            assert not any(n.value for n in k.withheld)
            assert set(k.trigger.evidence) == set(suggested[k.kind].evidence)
            assert [
                n.label.split(":")[0].removeprefix("caution ") for n in k.cautions if n.value
            ] == list(suggested[k.kind].cautions)
        elif k.kind in withheld:
            first = next(n for n in k.withheld if n.value)
            assert k.outcome == "withheld"
            assert first.label.startswith(f"withheld {withheld[k.kind].reason}:")
            assert first.evidence == withheld[k.kind].evidence
        else:
            assert k.outcome == "not-triggered"


def test_withheld_names_every_reason_and_its_resource(pack: Pack) -> None:
    result = explain(scenario_chart("P26-withheld-two-reasons"), NOW, pack, "P26-enc")
    bup = next(k for k in result.kinds if k.kind == "moud-buprenorphine")
    true = [(n.label.split(":")[0], n.evidence) for n in bup.withheld if n.value]
    assert true == [
        ("withheld on-moud", ("MedicationRequest/P26-mr3",)),
        ("withheld allergy", ("AllergyIntolerance/P26-al2",)),
    ]


def test_not_triggered_names_the_missing_part(pack: Pack) -> None:
    """P13: an overdose (substance not coded) without naloxone is not OUD evidence."""
    result = explain(scenario_chart("P13-overdose-no-naloxone"), NOW, pack, "P13-enc")
    bup = next(k for k in result.kinds if k.kind == "moud-buprenorphine")
    assert bup.outcome == "not-triggered"
    both = _find(bup.trigger, "all of")
    assert [(c.label.split(" =")[0], c.value) for c in both.children] == [
        ("overdose_unspecified_this_visit", True),
        ("naloxone_administered_this_visit", False),
    ]


def test_values_and_near_misses_are_named(pack: Pack) -> None:
    result = explain(scenario_chart("P23-recent-methadone-cows-10"), NOW, pack, "P23-enc")
    bup = next(k for k in result.kinds if k.kind == "moud-buprenorphine")
    (induction,) = bup.variants
    raised = _find(induction, "cows_at_raised_threshold")
    assert not raised.value and "latest 10 at" in raised.detail and "P23-cows3" in raised.detail
    under_age = next(n for n in bup.withheld if "under-age" in n.label)
    assert not under_age.value and "age 47" in under_age.detail
    result = explain(scenario_chart("P09-entered-in-error"), NOW, pack, "P09-enc")
    prc = result.kinds[0]
    assert "verificationStatus entered-in-error" in _find(prc.trigger, "oud_active_dx").detail


def test_render_folds_what_did_not_decide(pack: Pack) -> None:
    result = explain(scenario_chart("P13-overdose-no-naloxone"), NOW, pack, "P13-enc")
    text = render(result)
    assert "moud-buprenorphine: NOT TRIGGERED" in text
    assert "naloxone-kit: SUGGESTED" in text
    assert "oud_active_dx" not in text.split("moud-buprenorphine")[0]  # folded for the coach
    assert len(render(result, verbose=True)) > len(text)


def test_cli_explain() -> None:
    chart = str(SCENARIOS / "P26-withheld-two-reasons.json")
    proc = run_cli("explain", chart, "--now", EXPECTED["now"])
    assert proc.returncode == 0, proc.stderr
    assert "moud-buprenorphine: WITHHELD" in proc.stdout
    assert "yes withheld allergy: buprenorphine_allergy" in proc.stdout
    out = json.loads(run_cli("explain", chart, "--now", EXPECTED["now"], "--json").stdout)
    assert set(out) == {"pack", "suggestions", "withheld", "notices", "explain"}
    assert [k["outcome"] for k in out["explain"]] == [
        "suggested",
        "withheld",
        "suggested",
        "suggested",
    ]
    bad = run_cli("explain", str(SCENARIOS / "nowhere.json"), "--now", EXPECTED["now"])
    assert bad.returncode == 2 and bad.stdout == ""
