"""The ``rules`` command line: output contract and exit codes (run as a subprocess)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from smartapp.engine import Pack

from .helpers import EXPECTED, PATIENT, RULES, SCENARIOS, run_cli

P01 = str(SCENARIOS / "P01-oud-withdrawal.json")
NOW_TEXT = EXPECTED["now"]


def test_check_default_pack_prints_one_ok_line(pack: Pack) -> None:
    proc = run_cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == (f"OK id=handoff-default version=2.0.0 hash=sha256:{pack.content_hash}\n")


def test_check_lists_every_error_with_file_line_field(tmp_path: Path) -> None:
    text = (RULES / "packs" / "default.yaml").read_text()
    text = text.replace("valueset: hepatic", "valueset: liver", 1)
    text = text.replace("  naloxone_lookback: 365d", "  naloxone_lookback: a year", 1)
    text = text.replace("    when: on_moud\n", "    when: on_mod\n", 1)
    pack_path = tmp_path / "packs" / "bad.yaml"
    pack_path.parent.mkdir()
    pack_path.write_text(text)
    proc = run_cli("check", str(pack_path), "--valuesets", str(RULES / "valuesets"))
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    pattern = re.compile(rf"^{re.escape(str(pack_path))}:(\d+): ([\w.\[\]]+): (.+)$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    fields = {m.group(2): int(m.group(1)) for m in parsed if m}
    src = text.splitlines()
    assert "unknown value set 'liver'" in proc.stdout
    assert "liver" in src[fields["facts.severe_liver_disease.condition.valueset"] - 1]
    assert "unknown fact 'on_mod'" in proc.stdout
    assert "on_mod" in src[fields["suggestions[2].when"] - 1]
    within = [f for f in fields if f.endswith(".within")]
    assert len(within) == 4 and all("$naloxone_lookback" in src[fields[f] - 1] for f in within)
    assert "3 error(s)" not in proc.stdout and "error(s)" in proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(PATIENT), "expected a FHIR Bundle, got 'Patient'"),
        (
            json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{}]}),
            "entry[0]: entry has no resource",
        ),
        (json.dumps([{"id": "x"}]), "resources[0]: resource has no resourceType"),
        (
            json.dumps({"resourceType": "Bundle", "type": "document", "entry": []}),
            "unsupported Bundle type 'document'",
        ),
    ],
)
def test_eval_malformed_chart_exits_2_with_nothing_on_stdout(
    tmp_path: Path, content: str, message: str
) -> None:
    chart = tmp_path / "chart.json"
    chart.write_text(content)
    proc = run_cli("eval", str(chart), "--now", NOW_TEXT, "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in proc.stderr and str(chart) in proc.stderr


def test_eval_missing_file_and_unknown_encounter(tmp_path: Path) -> None:
    proc = run_cli("eval", str(tmp_path / "none.json"), "--now", NOW_TEXT, "--json")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "cannot read" in proc.stderr
    proc = run_cli("eval", P01, "--now", NOW_TEXT, "--encounter", "nope", "--json")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "encounter 'nope' is not in the chart" in proc.stderr


def test_eval_bad_now_exits_2() -> None:
    proc = run_cli("eval", P01, "--now", "tomorrow", "--json")
    assert proc.returncode == 2 and proc.stdout == "" and "ISO 8601" in proc.stderr


def test_eval_broken_pack_exits_2_listing_issues_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "packs" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text("id: x\n")
    proc = run_cli(
        "eval",
        P01,
        "--now",
        NOW_TEXT,
        "--pack",
        str(bad),
        "--valuesets",
        str(RULES / "valuesets"),
        "--json",
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert f"{bad}:1: version: required field is missing" in proc.stderr


def test_eval_accepts_a_list_of_resources_and_a_naive_now(tmp_path: Path) -> None:
    bundle = json.loads(Path(P01).read_text())
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([e["resource"] for e in bundle["entry"]]))
    from_list = run_cli("eval", str(listed), "--now", "2026-11-20T15:00:00", "--json")
    from_bundle = run_cli("eval", P01, "--now", NOW_TEXT, "--json")
    assert from_list.returncode == 0 and from_bundle.returncode == 0
    assert json.loads(from_list.stdout) == json.loads(from_bundle.stdout)
    assert [s["kind"] for s in json.loads(from_list.stdout)["suggestions"]] == [
        "prc-consult",
        "moud-buprenorphine",
        "naloxone-kit",
    ]


def test_eval_text_rendering() -> None:
    proc = run_cli("eval", str(SCENARIOS / "P14-pregnant.json"), "--now", NOW_TEXT)
    assert proc.returncode == 0
    assert "3 suggestion(s)" in proc.stdout
    assert "2. moud-buprenorphine [ed-induction]: Offer buprenorphine" in proc.stdout
    assert "cautions: pregnancy" in proc.stdout
    assert "evidence: Condition/P14-cond1" in proc.stdout
    assert "Coach unavailable" in proc.stdout


def test_rules_test_passes_on_the_committed_cases() -> None:
    proc = run_cli("test")
    assert proc.returncode == 0, proc.stdout
    total = len(list((RULES / "tests").glob("*.yaml")))
    assert total >= 46
    assert proc.stdout.splitlines()[-1] == f"{total} passed, 0 failed"
    assert "FAIL" not in proc.stdout


def _case(directory: Path, body: str, name: str = "wrong") -> Path:
    chart = os.path.relpath(SCENARIOS / "P01-oud-withdrawal.json", directory)
    path = directory / f"{name}.yaml"
    path.write_text(f'chart: {chart}\nnow: "{NOW_TEXT}"\nencounter: P01-enc\n{body}')
    return path


def test_rules_test_fails_with_a_diff_on_a_wrong_case(tmp_path: Path) -> None:
    wrong = _case(
        tmp_path,
        """expected:
  - kind: prc-consult
    evidence_any: [Condition/elsewhere]
  - kind: moud-buprenorphine
    variant: home-initiation
    cautions: [pregnancy]
    evidence_any: [Condition/P01-cond1]
  - kind: moud-continue
""",
    )
    proc = run_cli("test", str(wrong), str(RULES / "tests" / "P02-oud-no-cows.yaml"))
    assert proc.returncode == 1
    out = proc.stdout
    assert f"FAIL wrong ({wrong})" in out and "PASS P02-oud-no-cows" in out
    assert "~ prc-consult: evidence: expected any of ['Condition/elsewhere']" in out
    assert "~ moud-buprenorphine: variant: expected 'home-initiation', got 'ed-induction'" in out
    assert "~ moud-buprenorphine: cautions: expected ['pregnancy'], got []" in out
    assert "- missing    moud-continue" in out
    assert "+ unexpected naloxone-kit" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"


def test_rules_test_reports_an_invalid_case_file(tmp_path: Path) -> None:
    bad = _case(tmp_path, "expected:\n  - kind: prc-consult\n    evidence: [x]\n")
    proc = run_cli("test", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:6: expected[0].evidence: Extra inputs are not permitted" in proc.stdout


def test_rules_test_uses_the_rules_dir_from_the_environment(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES / "packs", rules / "packs")
    shutil.copytree(RULES / "valuesets", rules / "valuesets")
    (rules / "tests").mkdir()
    _case(rules / "tests", "expected: []\n", name="empty")
    proc = run_cli("test", env={"HANDOFF_RULES_DIR": str(rules)})
    assert proc.returncode == 1 and "FAIL empty" in proc.stdout
    assert "+ unexpected prc-consult" in proc.stdout


def test_schema_command_prints_the_committed_schema() -> None:
    proc = run_cli("schema")
    assert proc.returncode == 0
    assert proc.stdout == (RULES / "schema" / "pack.schema.json").read_text()


def test_eval_unread_types_reach_the_engine() -> None:
    """--unread (comma-separated, repeatable): caution, raised threshold and the notice."""
    proc = run_cli(
        "eval",
        P01,
        "--now",
        NOW_TEXT,
        "--json",
        "--unread",
        "MedicationRequest,AllergyIntolerance",
        "--unread",
        "Observation",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    bup = next(s for s in out["suggestions"] if s["kind"] == "moud-buprenorphine")
    assert (bup["variant"], bup["cautions"]) == ("home-initiation", ["chart-incomplete"])
    assert bup["caution_evidence"] == {"chart-incomplete": []}
    assert out["notices"] == [
        {
            "code": "chart-incomplete",
            "unread": ["AllergyIntolerance", "MedicationRequest", "Observation"],
        }
    ]
    text = run_cli("eval", P01, "--now", NOW_TEXT, "--unread", "MedicationStatement").stdout
    assert "NOTICE chart-incomplete: MedicationStatement" in text
    bad = run_cli("eval", P01, "--now", NOW_TEXT, "--unread", "medication request")
    assert bad.returncode == 2 and bad.stdout == "" and "--unread" in bad.stderr


def test_eval_text_shows_withheld_with_every_reason() -> None:
    chart = str(SCENARIOS / "P26-withheld-two-reasons.json")
    out = run_cli("eval", chart, "--now", NOW_TEXT).stdout
    assert "-  moud-buprenorphine: not suggested because on-moud" in out
    assert "   allergy: AllergyIntolerance/P26-al2" in out
