"""Pack loading: the default pack, its parameters, hash and schema; errors with file:line."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from smartapp.engine import Pack, PackError, default_pack_path, load_pack
from smartapp.engine.pack import pack_json_schema
from smartapp.engine.source import Issue
from smartapp.rulestools.cli import schema_text

from .helpers import RULES

DEFAULT = (RULES / "packs" / "default.yaml").read_text()
VALUESETS = RULES / "valuesets"


def test_default_pack_identity(pack: Pack) -> None:
    assert (pack.id, pack.version) == ("handoff-default", "2.0.0")
    assert len(pack.content_hash) == 64 and int(pack.content_hash, 16) >= 0
    assert [r.kind for r in pack.rules] == [
        "prc-consult",
        "moud-buprenorphine",
        "moud-continue",
        "naloxone-kit",
    ]
    assert len({r.id for r in pack.rules}) == 4


def test_spec_numbers_are_pack_parameters(pack: Pack) -> None:
    """Every age, threshold and look-back of the spec, with the spec's default value."""
    params = pack.document.parameters
    assert params["prc_min_age"] == 18
    assert params["buprenorphine_min_age"] == 16
    assert params["cows_threshold"] == 8
    assert params["cows_lookback"] == "12h"
    assert params["naloxone_lookback"] == "365d"
    assert params["lab_statuses"] == ["final", "amended", "corrected", "preliminary"]
    assert params["prc_referral_statuses"] == ["draft", "active", "on-hold", "completed"]
    assert params["moud_request_statuses"] == ["active", "on-hold"]
    assert params["moud_statement_statuses"] == ["active", "intended"]
    assert params["naloxone_request_statuses"] == ["active", "on-hold", "completed"]
    cows = pack.facts["cows_at_threshold"].latest_observation_value_at_least
    assert (cows.at_least, cows.within) == (8, timedelta(hours=12))


def test_decline_reasons_are_the_specs(pack: Pack) -> None:
    labels = [d.label for d in pack.document.decline_reasons]
    assert labels == [
        "Patient declined",
        "Already in treatment elsewhere",
        "Clinically inappropriate now",
        "Coach unavailable",
        "Other",
    ]
    assert [d.free_text for d in pack.document.decline_reasons] == [False] * 4 + [True]
    everyone = ("patient-declined", "in-treatment-elsewhere", "clinically-inappropriate", "other")
    for rule in pack.rules:
        # "Coach unavailable" is a reason for the coach consult only (clinical-rules.md).
        expected = (
            (*everyone[:3], "coach-unavailable", "other")
            if rule.kind == "prc-consult"
            else everyone
        )
        assert rule.decline_reasons == expected, rule.kind


def test_decline_reasons_are_scoped_by_kind(pack: Pack) -> None:
    scope = {d.code: d.applies_to for d in pack.document.decline_reasons}
    assert scope == {
        "patient-declined": None,
        "in-treatment-elsewhere": None,
        "clinically-inappropriate": None,
        "coach-unavailable": ("prc-consult",),
        "other": None,
    }


def test_a_reason_outside_its_scope_or_an_unknown_kind_is_an_error(tmp_path: Path) -> None:
    path, text = _broken(
        tmp_path,
        (
            "    decline_reasons: &medication_reasons\n      - patient-declined\n",
            "    decline_reasons: &medication_reasons\n      - patient-declined\n"
            "      - coach-unavailable\n",
        ),
        ("applies_to: [prc-consult]}", "applies_to: [prc-consult, coach-visit]}"),
    )
    issues = _issues(path)
    by_field = {i.field: i for i in issues}
    scoped = by_field["suggestions[1].decline_reasons[1]"]
    assert scoped.line == _line(text, "&medication_reasons") + 2
    assert "decline reason 'coach-unavailable' does not apply to moud-buprenorphine" in (
        scoped.message
    )
    unknown = by_field["decline_reasons[3].applies_to[1]"]
    assert unknown.line == _line(text, "coach-visit")
    assert "unknown suggestion kind 'coach-visit'" in unknown.message


def test_schema_knows_applies_to() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(pack_json_schema())
    data = yaml.safe_load(DEFAULT)
    assert data["decline_reasons"][3]["applies_to"] == ["prc-consult"]
    assert list(validator.iter_errors(data)) == []
    data["decline_reasons"][3]["applies_to"] = []
    assert list(validator.iter_errors(data))
    data["decline_reasons"][3]["applies_to"] = "prc-consult"
    assert list(validator.iter_errors(data))


def _copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES / "packs", target / "packs", dirs_exist_ok=True)
    shutil.copytree(VALUESETS, target / "valuesets", dirs_exist_ok=True)
    return target


def test_content_hash_is_stable_and_tracks_used_value_sets(tmp_path: Path, pack: Pack) -> None:
    rules = _copy_rules(tmp_path)
    copy_path = rules / "packs" / "default.yaml"
    assert load_pack(copy_path).content_hash == pack.content_hash  # location independent
    (rules / "valuesets" / "unused.json").write_text(
        json.dumps(
            {
                "resourceType": "ValueSet",
                "id": "unused",
                "compose": {"include": [{"system": "urn:x", "concept": [{"code": "1"}]}]},
            }
        )
    )
    assert load_pack(copy_path).content_hash == pack.content_hash  # unused: no effect
    naloxone = rules / "valuesets" / "naloxone.json"
    naloxone.write_text(naloxone.read_text().replace('"7242"', '"7242"', 1) + "\n")
    assert load_pack(copy_path).content_hash != pack.content_hash


def test_schema_file_is_current() -> None:
    committed = (RULES / "schema" / "pack.schema.json").read_text()
    assert committed == schema_text(pack_json_schema()), "run: handoff rules schema --write"


def test_schema_accepts_the_default_pack_and_rejects_typos() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(pack_json_schema())
    data = yaml.safe_load(DEFAULT)
    assert list(validator.iter_errors(data)) == []
    data["facts"]["oud_active_dx"]["condition"]["this_vist"] = True
    assert list(validator.iter_errors(data))


def test_default_pack_path_and_env_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HANDOFF_RULES_DIR", raising=False)
    assert default_pack_path() == RULES / "packs" / "default.yaml"
    rules = _copy_rules(tmp_path)
    monkeypatch.setenv("HANDOFF_RULES_DIR", str(rules))
    assert default_pack_path() == rules / "packs" / "default.yaml"
    assert load_pack().path == rules / "packs" / "default.yaml"


# ---------------------------------------------------------------------------------------
# broken packs: every issue names file, line and field


def _broken(tmp_path: Path, *edits: tuple[str, str]) -> tuple[Path, str]:
    text = DEFAULT
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "packs" / "broken.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, text


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _issues(path: Path) -> list[Issue]:
    with pytest.raises(PackError) as info:
        load_pack(path, VALUESETS)
    return info.value.issues


def test_every_error_is_listed_with_file_line_and_field(tmp_path: Path) -> None:
    path, text = _broken(
        tmp_path,
        (
            "      valueset: oud-active\n      clinical_status: $active_condition",
            "      valueset: oud-actve\n      clinical_status: $active_condition",
        ),
        (
            "      this_visit: true\n  cows_at_threshold",
            "      this_vist: true\n  cows_at_threshold",
        ),
        (
            "      - oud_remission\n      - sud_other_dx",
            "      - oud_remision\n      - sud_other_dx",
        ),
        ("    kind: moud-continue", "    kind: prc-consult"),
        ("  cows_threshold: 8", "  cows_threshold: eight"),
    )
    issues = _issues(path)
    second_kind = [i for i, ln in enumerate(text.splitlines(), 1) if "kind: prc-consult" in ln][1]
    assert {i.file for i in issues} == {str(path)}
    assert {(i.line, i.field) for i in issues} == {
        (_line(text, "oud-actve"), "facts.oud_active_dx.condition.valueset"),
        (_line(text, "this_vist"), "facts.positive_opioid_screen_this_visit.observation.this_vist"),
        (_line(text, "- oud_remision"), "facts.sud_evidence.any_of[1]"),
        (second_kind, "suggestions[2].kind"),
        (
            _line(text, "at_least: $cows_threshold"),
            "facts.cows_at_threshold.latest_observation_value_at_least.at_least",
        ),
    }
    messages = " | ".join(str(i) for i in issues)
    assert "unknown value set 'oud-actve'" in messages
    assert "unknown field" in messages
    assert "unknown fact 'oud_remision'" in messages
    assert "duplicate kind 'prc-consult' (also suggestions[0])" in messages
    assert "(from parameter $cows_threshold)" in messages


@pytest.mark.parametrize(
    ("edit", "needle", "field", "message"),
    [
        (
            ("  prc_min_age: 18\n", "  prc_min_age: 18\n  unused_age: 3\n"),
            "unused_age",
            "parameters.unused_age",
            "parameter is never used",
        ),
        (
            ("{age_under: $prc_min_age}", "{age_under: $prc_min_ag}"),
            "$prc_min_ag}",
            "suggestions[0].withheld_when[1].when.age_under",
            "unknown parameter",
        ),
        (
            (
                "  oud_evidence:\n    any_of:\n      - oud_active_dx",
                "  oud_evidence:\n    any_of:\n      - sud_evidence",
            ),
            "  oud_evidence:",
            "facts.oud_evidence",
            "fact refers to itself",
        ),
        (
            (
                "      - name: home-initiation\n",
                "      - name: home-initiation\n        when: on_moud\n",
            ),
            "        when: on_moud",
            "suggestions[1].variants[1].when",
            "the last variant is the default",
        ),
        (
            (
                "    decline_reasons: &medication_reasons\n      - patient-declined\n"
                "      - in-treatment-elsewhere\n",
                "    decline_reasons: &medication_reasons\n      - patient-declined\n"
                "      - maybe-later\n",
            ),
            "maybe-later",
            "suggestions[1].decline_reasons[1]",
            "unknown decline reason 'maybe-later'",
        ),
        (
            ("  cows_lookback: 12h", "  cows_lookback: 12 hours"),
            "within: $cows_lookback",
            "facts.cows_at_threshold.latest_observation_value_at_least.within",
            "expected a positive duration",
        ),
        (
            ("    when: on_moud\n", "    when: {on_moud: true}\n"),
            "{on_moud: true}",
            "suggestions[2].when",
            "expected a fact name or a mapping",
        ),
        (
            ("  active_allergy: [active, absent]", "  active_allergy: active"),
            "clinical_status: $active_allergy",
            "facts.buprenorphine_allergy.allergy.clinical_status",
            "expected a list of status codes",
        ),
        (
            ("    title: Offer buprenorphine\n", ""),
            "  - id: moud-buprenorphine-oud",
            "suggestions[1].title",
            "required field is missing",
        ),
    ],
)
def test_single_errors(
    tmp_path: Path, edit: tuple[str, str], needle: str, field: str, message: str
) -> None:
    path, text = _broken(tmp_path, edit)
    issues = _issues(path)
    matching = [i for i in issues if i.field == field]
    assert matching, [str(i) for i in issues]
    issue = matching[0]
    assert message in issue.message
    assert issue.file == str(path)
    assert issue.line == _line(text, needle)


def test_yaml_syntax_and_duplicate_keys(tmp_path: Path) -> None:
    path, text = _broken(tmp_path, ("  prc_min_age: 18\n", "  prc_min_age: [18\n"))
    (issue,) = _issues(path)
    assert issue.field == "(syntax)" and "flow sequence" in issue.message
    assert issue.line in (_line(text, "prc_min_age"), _line(text, "prc_min_age") + 1)
    path, text = _broken(
        tmp_path, ("  prc_min_age: 18\n", "  prc_min_age: 18\n  prc_min_age: 19\n")
    )
    (issue,) = _issues(path)
    assert "duplicate key 'prc_min_age'" in issue.message
    assert issue.line == _line(text, "prc_min_age: 19")


def _valueset_error(tmp_path: Path, name: str, content: str) -> list[Issue]:
    rules = _copy_rules(tmp_path)
    (rules / "valuesets" / name).write_text(content)
    with pytest.raises(PackError) as info:
        load_pack(rules / "packs" / "default.yaml")
    return info.value.issues


def test_value_set_errors_name_file_line_and_field(tmp_path: Path) -> None:
    issues = _valueset_error(
        tmp_path,
        "sedatives.json",
        (VALUESETS / "sedatives.json").read_text().replace('"code": "596"', '"code": "59[6"'),
    )
    (issue,) = issues
    assert issue.file.endswith("sedatives.json")
    assert issue.field == "compose.include[0].concept[0].code"
    assert "bad character class" in issue.message
    text = (tmp_path / "rules" / "valuesets" / "sedatives.json").read_text()
    assert issue.line == _line(text, '"59[6"')


def test_value_set_id_must_match_file_and_filters_are_refused(tmp_path: Path) -> None:
    issues = _valueset_error(
        tmp_path,
        "hepatic.json",
        json.dumps(
            {
                "resourceType": "ValueSet",
                "id": "liver",
                "compose": {
                    "include": [
                        {"system": "http://snomed.info/sct", "concept": [{"code": "19943007"}]}
                    ]
                },
            },
            indent=2,
        ),
    )
    assert any("must match the file name" in i.message for i in issues)
    issues = _valueset_error(
        tmp_path,
        "hepatic.json",
        json.dumps(
            {
                "resourceType": "ValueSet",
                "id": "hepatic",
                "compose": {
                    "include": [
                        {
                            "system": "http://snomed.info/sct",
                            "filter": [{"property": "concept", "op": "is-a", "value": "19943007"}],
                        }
                    ]
                },
            },
            indent=2,
        ),
    )
    fields = {i.field for i in issues}
    assert "compose.include[0].filter" in fields and "compose.include[0].concept" in fields


def test_value_set_json_syntax_error_has_a_line(tmp_path: Path) -> None:
    (issue,) = _valueset_error(tmp_path, "pregnancy.json", '{\n  "id": "pregnancy",\n  oops\n')
    assert issue.file.endswith("pregnancy.json") and issue.field == "(syntax)"
    assert issue.line >= 3


def test_missing_pack_file(tmp_path: Path) -> None:
    (issue,) = _issues(tmp_path / "packs" / "nope.yaml")
    assert issue.field == "(file)" and "cannot read" in issue.message


def test_tab_indented_json_value_sets_load(tmp_path: Path, pack: Pack) -> None:
    """JSON is parsed as JSON; YAML only adds line numbers where it can."""
    rules = _copy_rules(tmp_path)
    target = rules / "valuesets" / "pregnancy.json"
    target.write_text(json.dumps(json.loads(target.read_text()), indent="\t"))
    loaded = load_pack(rules / "packs" / "default.yaml")
    assert loaded.valuesets["pregnancy"].contains("http://snomed.info/sct", "77386006")
    assert loaded.content_hash != pack.content_hash  # bytes changed, so the hash did


def test_a_version_1_pack_still_loads_and_withholds_with_no_suggestions(tmp_path: Path) -> None:
    """``no_suggestions_when`` (version 1): every triggered kind withheld, reason and notice
    ``no-suggestions``; ``unless`` reported as ``excluded``."""
    from smartapp.engine import evaluate

    from .helpers import NOW, scenario_chart

    text = DEFAULT.replace(
        "withhold_all:\n  - {reason: deceased, when: deceased}\n", "no_suggestions_when: deceased\n"
    )
    text = text.replace(
        "    withheld_when:\n      - {reason: has-naloxone, when: has_naloxone}\n",
        "    unless: has_naloxone\n",
    )
    path = tmp_path / "packs" / "v1.yaml"
    path.parent.mkdir()
    path.write_text(text)
    old = load_pack(path, VALUESETS)
    dead = evaluate(scenario_chart("P16-deceased"), NOW, old, "P16-enc")
    assert {w.reason for w in dead.withheld} == {"no-suggestions"}
    assert [n.code for n in dead.notices] == ["no-suggestions"]
    kit = evaluate(scenario_chart("P11-has-naloxone"), NOW, old, "P11-enc")
    assert [(w.kind, w.reason) for w in kit.withheld] == [("naloxone-kit", "excluded")]
