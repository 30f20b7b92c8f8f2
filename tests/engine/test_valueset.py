"""Value sets: code patterns, exclusions, and agreement with the spec's code tables."""

from __future__ import annotations

import json
import re

import pytest

from smartapp.engine import Pack
from smartapp.engine.valueset import compile_pattern, is_pattern

from .helpers import ICD, RULES, SCT, SHARED


@pytest.mark.parametrize(
    ("pattern", "code", "hit"),
    [
        ("F11.1*", "F11.1", True),
        ("F11.1*", "F11.188", True),
        ("F11.1*", "F11.2", False),
        ("F11.1*", "F111", False),  # the dot is matched as written
        ("T40.0X[1-4]?", "T40.0X4D", True),
        ("T40.0X[1-4]?", "T40.0X5A", False),
        ("T40.0X[1-4]?", "T40.0X1", False),  # the 7th character is required
        ("T40.0X[1-4]?", "T40.0X1AA", False),
        ("T40.0X[1-4]?", "t40.0x1a", False),  # case-sensitive
        ("A[BD]C", "ADC", True),
    ],
)
def test_pattern_semantics(pattern: str, code: str, hit: bool) -> None:
    assert is_pattern(pattern)
    assert bool(compile_pattern(pattern).fullmatch(code)) is hit


@pytest.mark.parametrize("bad", ["T40.[", "T40.[]", "T40.]", "T40.[4-1]", "T40.[a-]"])
def test_malformed_patterns_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_pattern(bad)


OVERDOSE_CODES = {
    # intent 1-4 with a 7th character: opioid poisoning
    "T40.0X1A": True,
    "T40.1X1A": True,
    "T40.2X2D": True,
    "T40.3X3S": True,
    "T40.4X4A": True,
    "T40.411A": True,
    "T40.412A": True,
    "T40.421A": True,
    "T40.494A": True,
    "T40.601A": True,
    "T40.691A": True,
    "T40.694S": True,
    # intent 5 (adverse effect) and 6 (underdosing): never
    "T40.0X5A": False,
    "T40.1X5A": False,
    "T40.2X6A": False,
    "T40.415A": False,
    "T40.416A": False,
    "T40.425A": False,
    "T40.495A": False,
    "T40.605A": False,
    "T40.696A": False,
    # other T40 groups (cocaine, cannabis, LSD) and malformed codes
    "T40.5X1A": False,
    "T40.7X1A": False,
    "T40.8X1A": False,
    "T40.1X1": False,
    "T40.41X1A": False,
    "T4011X1A": False,
}


@pytest.mark.parametrize(("code", "member"), sorted(OVERDOSE_CODES.items()))
def test_opioid_overdose_intent_digit(code: str, member: bool, pack: Pack) -> None:
    assert pack.valuesets["opioid-overdose"].contains(ICD, code) is member


STIMULANT_CODES = {
    # cocaine and the psychostimulants the spec lists, intent 1-4
    "T40.5X1A": True,
    "T40.5X4D": True,
    "T43.601A": True,
    "T43.621A": True,
    "T43.641A": True,
    "T43.651A": True,
    "T43.692S": True,
    # caffeine and methylphenidate, adverse effects and underdosing, opioids: never
    "T43.611A": False,
    "T43.631A": False,
    "T40.5X5A": False,
    "T43.626A": False,
    "T40.1X1A": False,
}


@pytest.mark.parametrize(("code", "member"), sorted(STIMULANT_CODES.items()))
def test_stimulant_overdose_codes(code: str, member: bool, pack: Pack) -> None:
    assert pack.valuesets["stimulant-overdose"].contains(ICD, code) is member


@pytest.mark.parametrize(
    ("code", "later"),
    [
        ("T40.1X1D", True),
        ("T40.411S", True),
        ("T43.621D", True),
        ("T40.1X1A", False),
        ("T43.621A", False),
        ("F11.20", False),
    ],
)
def test_subsequent_encounter_and_sequela_codes_are_history(
    code: str, later: bool, pack: Pack
) -> None:
    """A D or S 7th character is never an overdose this visit (history_codes)."""
    assert pack.valuesets["poisoning-subsequent"].contains(ICD, code) is later


@pytest.mark.parametrize(
    ("valueset", "code", "member"),
    [
        ("oud-active", "F11.20", True),
        ("oud-active", "F11.10", True),
        ("oud-active", "F11.90", True),
        ("oud-active", "F11.188", True),
        ("oud-active", "F11.11", False),  # excluded: remission
        ("oud-active", "F11.21", False),
        ("oud-active", "F11.91", False),  # v2: in remission
        ("oud-active", "F11.3", False),
        ("oud-remission", "F11.21", True),
        ("oud-remission", "F11.91", True),
        ("alcohol-use-disorder", "F10.20", True),
        ("alcohol-use-disorder", "F10.11", False),
        ("alcohol-use-disorder", "F10.21", False),
        ("pregnancy", "Z33.1", True),
        ("pregnancy", "Z33.3", True),
        ("pregnancy", "O94", False),  # sequelae, long after
        ("hepatic", "K76.82", True),
        ("hepatic", "K76.8", False),
        ("oud-remission", "F11.20", False),
        ("sud-other", "F10.20", True),
        ("sud-other", "F19.21", True),
        ("sud-other", "F11.20", False),
        ("sud-other", "F17.210", False),  # nicotine is not in the list
    ],
)
def test_icd_prefixes_and_exclusions(valueset: str, code: str, member: bool, pack: Pack) -> None:
    assert pack.valuesets[valueset].contains(ICD, code) is member


def test_membership_needs_the_right_system(pack: Pack) -> None:
    assert pack.valuesets["oud-active"].contains(SCT, "5602001")
    assert not pack.valuesets["oud-active"].contains(ICD, "5602001")
    assert not pack.valuesets["oud-active"].contains("http://hl7.org/fhir/sid/icd-10", "F11.20")


def _spec_rows() -> dict[str, str]:
    """Evidence group -> codes column of the spec's table."""
    text = (SHARED / "spec" / "clinical-rules.md").read_text()
    section = text.split("## Evidence groups", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([a-z-]+)` \|[^|]*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


SPEC_ROWS = _spec_rows()


#: Value sets beside the table's groups: one the spec names in its derived facts, and the
#: pack's own reading of "a D or S code counts only towards a recent overdose".
EXTRA_VALUESETS = {"moud-extended-release", "poisoning-subsequent"}


def test_every_spec_group_has_a_value_set() -> None:
    assert len(SPEC_ROWS) == 18
    files = {p.stem for p in (RULES / "valuesets").glob("*.json")}
    assert files == set(SPEC_ROWS) | EXTRA_VALUESETS


def test_extended_release_codes_match_the_spec() -> None:
    text = (SHARED / "spec" / "clinical-rules.md").read_text()
    m = re.search(r"value set `moud-extended-release`: RxNorm ([\d, ]+)", text)
    assert m is not None
    data = json.loads((RULES / "valuesets" / "moud-extended-release.json").read_text())
    codes = {c["code"] for inc in data["compose"]["include"] for c in inc["concept"]}
    assert codes == set(re.findall(r"\d+", m.group(1)))


@pytest.mark.parametrize("group", sorted(SPEC_ROWS))
def test_numeric_codes_match_the_spec_exactly(group: str) -> None:
    """SNOMED, RxNorm and LOINC codes: the same set in the spec and in the value set."""
    spec_codes = set(re.findall(r"\b\d{3,}(?:-\d)?\b", SPEC_ROWS[group]))
    data = json.loads((RULES / "valuesets" / f"{group}.json").read_text())
    file_codes = {
        c["code"]
        for inc in data["compose"]["include"]
        for c in inc["concept"]
        if re.fullmatch(r"\d+(?:-\d)?", c["code"])
    }
    assert file_codes == spec_codes


ICD_GROUPS = sorted(
    g for g, row in SPEC_ROWS.items() if "ICD-10-CM" in row and not re.search(r"T4\d\.", row)
)
POISONING_GROUPS = sorted(g for g, row in SPEC_ROWS.items() if re.search(r"T4\d\.", row))


def _icd(group: str) -> tuple[set[str], set[str]]:
    """ICD-10-CM codes a value set includes and excludes."""
    data = json.loads((RULES / "valuesets" / f"{group}.json").read_text())
    listed = {
        c["code"]
        for inc in data["compose"]["include"]
        if inc["system"] == ICD
        for c in inc["concept"]
    }
    excluded = {
        c["code"]
        for exc in data["compose"].get("exclude", [])
        for c in exc["concept"]
        if exc["system"] == ICD
    }
    return listed, excluded


def test_icd_groups_of_the_spec() -> None:
    assert set(ICD_GROUPS) >= {
        "oud-active",
        "oud-remission",
        "sud-other",
        "pregnancy",
        "hepatic",
        "alcohol-use-disorder",
    }
    assert set(POISONING_GROUPS) == {"opioid-overdose", "stimulant-overdose"}


@pytest.mark.parametrize("group", ICD_GROUPS)
def test_icd_codes_match_the_spec(group: str) -> None:
    """Every ICD-10-CM code or pattern of the row, included or excluded, and no other."""
    spec = set(re.findall(r"\b([A-Z]\d[0-9A-Z](?:\.[0-9A-Z]*)?\*?|[A-Z]\*)", SPEC_ROWS[group]))
    listed, excluded = _icd(group)
    assert listed | excluded == spec


@pytest.mark.parametrize("group", POISONING_GROUPS)
def test_poisoning_stems_match_the_spec(group: str) -> None:
    """Each T40/T43 stem the row lists (before "never"), with intent 1-4 and a 7th character."""
    wanted = SPEC_ROWS[group].split("never", 1)[0]
    stems = set(re.findall(r"\bT4\d\.\d[0-9X]\b", wanted))
    listed, excluded = _icd(group)
    assert listed == {f"{stem}[1-4]?" for stem in stems}
    assert not excluded
