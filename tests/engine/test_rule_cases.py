"""Every rule test case in rules/tests (shared scenarios and spec branches) passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from smartapp.engine import Pack, load_pack
from smartapp.rulestools.cli import run_case

from .helpers import RULES, SCENARIOS

CASES = sorted((RULES / "tests").glob("*.yaml"))


def test_cases_cover_the_scenarios_and_extra_branches() -> None:
    names = {p.stem for p in CASES}
    assert {n for n in names if n.startswith("P")} == {p.stem for p in SCENARIOS.glob("P*.json")}
    assert len([n for n in names if n.startswith("X")]) >= 50


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_chart_paths_are_relative_and_resolve(path: Path) -> None:
    chart = yaml.safe_load(path.read_text())["chart"]
    assert not Path(chart).is_absolute()
    assert (path.parent / chart).resolve().is_file()


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rule_case(path: Path, pack: Pack) -> None:
    packs = {(RULES / "packs" / "default.yaml").resolve(): pack}
    name, problems = run_case(path, None, None, packs)
    assert name == path.stem
    assert problems == []


def test_a_mismatching_case_reports_problems(tmp_path: Path, pack: Pack) -> None:
    """The runner is not vacuous: the X02 chart against an empty expectation fails."""
    case = tmp_path / "x.yaml"
    case.write_text(
        f"chart: {RULES / 'tests' / 'charts' / 'X02-t40-fentanyl-accidental.json'}\n"
        "now: '2026-11-20T15:00:00Z'\nexpected: []\n"
    )
    _name, problems = run_case(
        case, None, None, {(RULES / "packs" / "default.yaml").resolve(): pack}
    )
    assert sorted(p.split()[2] for p in problems) == [
        "moud-buprenorphine",
        "naloxone-kit",
        "prc-consult",
    ]


# ---------------------------------------------------------------------------------------
# mutation checks: each version 2 rule is pinned by at least one case that fails when the
# pack (or a value set) stops implementing it

PACK = "packs/default.yaml"
#: (spec v2 change, [(file under rules/, text, replacement)], cases that must then fail)
MUTATIONS: list[tuple[str, list[tuple[str, str, str]], set[str]]] = [
    (
        "1 reasonCode of the current encounter",
        [(PACK, "  reason_codes: true", "  reason_codes: false")],
        {"P17-reason-code-overdose"},
    ),
    (
        "1 diagnosis list of the current encounter",
        [(PACK, "  diagnoses: true", "  diagnoses: false")],
        {"X31-encounter-diagnosis"},
    ),
    (
        "1 a Condition older than 24 h is history",
        [(PACK, "  condition_history: 24h", "  condition_history: 72h")],
        {"X32-condition-history-24h"},
    ),
    (
        "2 prehospital naloxone",
        [(PACK, "  prehospital_window: 6h", "  prehospital_window: 10m")],
        {"P18-ems-naloxone-prehospital"},
    ),
    (
        "2 prehospital window bound",
        [(PACK, "  prehospital_window: 6h", "  prehospital_window: 7h")],
        {"X33-naloxone-before-prehospital-window"},
    ),
    (
        "3 stimulant poisoning",
        [
            (
                PACK,
                "      - stimulant_overdose_this_visit\n      - naloxone_administered",
                "      - naloxone_administered",
            )
        ],
        {"P19-stimulant-poisoning"},
    ),
    (
        "3 stimulant value set",
        [("valuesets/stimulant-overdose.json", '"T40.5X[1-4]?"', '"T40.5X[5-6]?"')],
        {"X53-stimulant-overdose-age-17"},
    ),
    (
        "4 recent overdose",
        [
            (
                PACK,
                "      - recent_overdose\n      - positive_opioid_screen_this_visit",
                "      - positive_opioid_screen_this_visit",
            )
        ],
        {"P20-recent-overdose-unrelated-visit"},
    ),
    (
        "4 recent overdose look-back",
        [(PACK, "  recent_overdose_lookback: 365d", "  recent_overdose_lookback: 100d")],
        {"P20-recent-overdose-unrelated-visit", "X34-earlier-encounter-reason"},
    ),
    (
        "4 earlier encounters' reasonCode",
        [(PACK, "      earlier_encounter_reasons: true\n", "")],
        {"X34-earlier-encounter-reason"},
    ),
    (
        "5 a kit from before does not count after an overdose",
        [
            (
                PACK,
                "      - all_of: [naloxone_kit_before, {not: overdose_this_visit}]",
                "      - naloxone_kit_before",
            )
        ],
        {"P21-overdose-with-naloxone-rx"},
    ),
    (
        "5 a kit from this visit always counts",
        [(PACK, "      - naloxone_kit_this_visit\n      - all_of", "      - all_of")],
        {"X35-kit-this-visit-after-overdose"},
    ),
    (
        "5/11 only take-home kits",
        [("valuesets/naloxone-kit.json", '"1725059"', '"1191222"')],
        {"P28-repeat-overdose-vial-not-kit"},
    ),
    (
        "11 a kit request is an order",
        [
            (
                PACK,
                "  naloxone_request_intents: [order]",
                "  naloxone_request_intents: [order, proposal]",
            )
        ],
        {"X50-kit-proposal-is-not-a-kit"},
    ),
    (
        "6 on MOUD from dispenses",
        [
            (
                PACK,
                "status: {MedicationDispense: $dispense_statuses}\n          supply_covers_now",
                "status: {MedicationDispense: [none]}\n          supply_covers_now",
            )
        ],
        {"P22-on-moud-dispense", "X36-dispense-without-days-supply"},
    ),
    (
        "6 a dispense without daysSupply lasts 30 days",
        [(PACK, "  dispense_default_supply: 30d", "  dispense_default_supply: 10d")],
        {"X36-dispense-without-days-supply"},
    ),
    (
        "6 a dispense that ran out",
        [
            (
                PACK,
                "      supply_covers_now: $dispense_default_supply\n",
                "      within: $naloxone_lookback\n",
            ),
            (PACK, "  dispense_default_supply: 30d\n", ""),
        ],
        {"X37-dispense-supply-ran-out"},
    ),
    (
        "6 extended-release injections",
        [(PACK, "  extended_release_lookback: 35d", "  extended_release_lookback: 14d")],
        {"X38-extended-release-injection"},
    ),
    (
        "11 drafts never make a patient on MOUD",
        [(PACK, "  not_a_draft: {not: [proposal, plan]}", "  not_a_draft: {not: [proposal]}")],
        {"X51-moud-plan-is-not-moud"},
    ),
    (
        "7 recent methadone threshold",
        [(PACK, "  cows_threshold_raised: 13", "  cows_threshold_raised: 14")],
        {"X39-recent-methadone-cows-13"},
    ),
    (
        "7 recent methadone window",
        [(PACK, "  recent_methadone_lookback: 7d", "  recent_methadone_lookback: 9d")],
        {"X40-methadone-8-days-ago"},
    ),
    (
        "7/11 methadone supply counts",
        [(PACK, "      supply_ended_within: $recent_methadone", "      within: $recent_methadone")],
        {"P27-methadone-rx-supply-left"},
    ),
    (
        "8 COWS from this visit only",
        [
            (
                PACK,
                "      # COWS from this visit only: a score from an earlier visit says nothing "
                "about now\n      this_visit: true\n",
                "",
            )
        ],
        {"X41-cows-from-earlier-visit"},
    ),
    (
        "9 alcohol caution",
        [(PACK, "      alcohol: alcohol_use_disorder\n", "")],
        {"P24-alcohol-caution"},
    ),
    (
        "9 alcohol value set excludes remission",
        [("valuesets/alcohol-use-disorder.json", '"F10.21"', '"F10.29"')],
        {"X52-alcohol-in-remission-no-caution"},
    ),
    (
        "9 recent-methadone caution",
        [(PACK, "      recent-methadone: recent_methadone\n", "")],
        {"P23-recent-methadone-cows-10"},
    ),
    (
        "9 confirm-oud caution",
        [
            (
                PACK,
                "    any_of: [oud_active_dx, oud_remission]",
                "    any_of: [oud_active_dx, oud_remission, oud_evidence]",
            )
        ],
        {"P05-heroin-overdose", "P25-confirm-oud-overdose"},
    ),
    (
        "9/10 chart-incomplete caution",
        [(PACK, "      chart-incomplete: medications_unread\n", "")],
        {"X42-chart-incomplete-medications"},
    ),
    (
        "9 wider pregnancy",
        [("valuesets/pregnancy.json", '"Z33.1"', '"Z33.9"')],
        {"X46-pregnancy-icd"},
    ),
    (
        "9 pregnancy sequelae excluded",
        [("valuesets/pregnancy.json", '"O94*"', '"O95*"')],
        {"X47-pregnancy-sequela-excluded"},
    ),
    (
        "9 wider hepatic",
        [("valuesets/hepatic.json", '"K76.82"', '"K76.89"')],
        {"X48-hepatic-encephalopathy"},
    ),
    (
        "9 sedatives given this visit",
        [
            (
                PACK,
                "          status: {MedicationAdministration: $administered}\n"
                "          this_visit: true\n  buprenorphine_allergy",
                "          status: {MedicationAdministration: [not-done]}\n"
                "          this_visit: true\n  buprenorphine_allergy",
            )
        ],
        {"X49-benzodiazepine-given-this-visit"},
    ),
    (
        "10 withheld reasons in order",
        [(PACK, "      - {reason: on-moud, when: on_moud}\n", "")],
        {"P26-withheld-two-reasons", "P03-on-methadone"},
    ),
    (
        "10 deceased withholds everything",
        [(PACK, "  - {reason: deceased, when: deceased}", "  - {reason: dead, when: deceased}")],
        {"P16-deceased", "X30-deceased-boolean"},
    ),
    (
        "10 not-current-ed-visit notice",
        [(PACK, "code: EMER}", "code: AMB}")],
        {"X44-not-current-ed-visit"},
    ),
    (
        "11 a D or S code this visit is history",
        [
            (
                PACK,
                "      this_visit: true\n      history_codes: poisoning-subsequent\n"
                "  overdose_unspecified_this_visit",
                "      this_visit: true\n  overdose_unspecified_this_visit",
            )
        ],
        {"X45-subsequent-encounter-code"},
    ),
    (
        "11 OUD in remission counts as diagnosed",
        [(PACK, "    any_of: [oud_active_dx, oud_remission]", "    any_of: [oud_active_dx]")],
        {"P29-remission-relapse-overdose"},
    ),
]


def _mutated_rules(tmp_path: Path, edits: list[tuple[str, str, str]]) -> Path:
    """A copy of rules/ (pack and value sets) with the edits applied."""
    root = tmp_path / "rules"
    for sub in ("packs", "valuesets"):
        shutil.copytree(RULES / sub, root / sub)
    for name, old, new in edits:
        path = root / name
        text = path.read_text()
        assert text.count(old) == 1, (name, old)
        path.write_text(text.replace(old, new))
    return root


@pytest.mark.parametrize(("change", "edits", "must_fail"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_v2_rule_is_pinned_by_a_case(
    tmp_path: Path, change: str, edits: list[tuple[str, str, str]], must_fail: set[str]
) -> None:
    """Mutate the pack: the named cases (which pass on the real pack) now fail."""
    root = _mutated_rules(tmp_path, edits)
    mutated = load_pack(root / PACK, root / "valuesets")
    packs = {(RULES / PACK).resolve(): mutated}
    failing = {
        path.stem
        for path in CASES
        if path.stem in must_fail and run_case(path, None, None, packs)[1]
    }
    assert failing == must_fail, change


def test_mutations_cover_every_v2_change() -> None:
    """Each of the spec's eleven "What changed in version 2" items has a mutation."""
    numbers = {int(n) for change, _e, _c in MUTATIONS for n in change.split()[0].split("/")}
    assert numbers == set(range(1, 12))
