"""``handoff rules backtest``: replaying past ED visits over a folder of charts.

Three patients with known visits (written as bundles or as bulk-export NDJSON), exact
counts, --compare, --json, workers, malformed input, and the whole Synthea folder.
"""

from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from smartapp.engine import Pack, load_pack
from smartapp.rulestools.backtest import BacktestError, report, run_backtest

from .helpers import ICD, RULES, RXNORM, SCENARIOS, SYNTHEA, run_cli

EMER = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}
AMB = {**EMER, "code": "AMB"}
COWS = {"coding": [{"system": "urn:handoff:flowsheet", "code": "cows-total"}]}


def _enc(
    eid: str,
    pid: str,
    start: str | None,
    end: str | None,
    cls: dict[str, str] = EMER,
    status: str = "finished",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": cls,
        "subject": {"reference": f"Patient/{pid}"},
    }
    if start:
        out["period"] = {"start": start, **({"end": end} if end else {})}
    return out


def _cond(
    cid: str, pid: str, code: str, onset: str, enc: str | None = None, **extra: Any
) -> dict[str, Any]:
    out = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "code": {"coding": [{"system": ICD, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset,
        **extra,
    }
    if enc:
        out["encounter"] = {"reference": f"Encounter/{enc}"}
    return out


def _cows(oid: str, pid: str, enc: str, when: str, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": COWS,
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{enc}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value},
    }


# A: heroin overdose at ED visit a1 (COWS 6); at a2, eight months later, that overdose is a
# recent overdose (v2: coach and kit); an AMB and a cancelled visit.
PATIENT_A = [
    {"resourceType": "Patient", "id": "pa", "birthDate": "1985-05-05"},
    _enc("a1", "pa", "2020-01-10T10:00:00Z", "2020-01-10T14:00:00Z"),
    _cond("a1-od", "pa", "T40.1X1A", "2020-01-10T10:30:00Z", "a1"),
    _cows("a1-cows", "pa", "a1", "2020-01-10T12:00:00Z", 6),
    _enc("a2", "pa", "2020-09-01T20:00:00Z", "2020-09-01T23:00:00Z"),
    _enc("a3", "pa", "2020-05-01T09:00:00Z", "2020-05-01T09:30:00Z", cls=AMB),
    _enc("a4", "pa", "2020-07-01T09:00:00Z", None, status="cancelled"),
]
# B: OUD diagnosed at a clinic visit *after* ED visit b1 (so b1 gets nothing); a naloxone
# kit prescription after b3 (it must not block b3's kit) that does block b4's (v2: only a
# take-home kit blocks one, so the order is the nasal spray, no longer a vial).
PATIENT_B = [
    {"resourceType": "Patient", "id": "pb", "birthDate": "1990-02-02"},
    _enc("b1", "pb", "2019-03-01T08:00:00Z", "2019-03-01T10:00:00Z"),
    _enc("b2", "pb", "2019-05-01T09:00:00Z", "2019-05-01T09:30:00Z", cls=AMB),
    _cond(
        "b-oud", "pb", "F11.20", "2019-05-01T09:00:00Z", "b2", recordedDate="2019-05-01T09:10:00Z"
    ),
    _enc("b3", "pb", "2019-07-01T08:00:00Z", "2019-07-01T09:00:00Z"),
    _cows("b3-cows", "pb", "b3", "2019-07-01T08:30:00Z", 4),
    {
        "resourceType": "MedicationRequest",
        "id": "b-nalox",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pb"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1725059"}]},
        "authoredOn": "2019-08-01T10:00:00Z",
    },
    _enc("b4", "pb", "2019-09-01T08:00:00Z", "2019-09-01T09:00:00Z"),
]
# C: alcohol use disorder resolved after c1 (active then); died 2021-01-01, so c3 (after
# death) gets nothing although OUD was diagnosed before it; c2 has no time (skipped).
PATIENT_C = [
    {
        "resourceType": "Patient",
        "id": "pc",
        "birthDate": "1970-01-01",
        "deceasedDateTime": "2021-01-01T00:00:00Z",
    },
    _enc("c1", "pc", "2020-02-01T10:00:00Z", "2020-02-01T12:00:00Z"),
    _cond(
        "c-aud",
        "pc",
        "F10.20",
        "2015-01-01",
        clinicalStatus={"coding": [{"code": "resolved"}]},
        abatementDateTime="2020-06-01",
    ),
    _enc("c2", "pc", None, None),
    _enc("c3", "pc", "2021-02-01T10:00:00Z", "2021-02-01T11:00:00Z"),
    _cond("c-oud", "pc", "F11.20", "2020-12-01"),
]

BUPE_HOME = ("moud-buprenorphine", "home-initiation")
#: visit id -> (kind, variant) expected
EXPECTED = {
    "a1": {("prc-consult", None), BUPE_HOME, ("naloxone-kit", None)},
    "a2": {("prc-consult", None), ("naloxone-kit", None)},  # v2: recent overdose
    "b1": set(),
    "b3": {("prc-consult", None), BUPE_HOME, ("naloxone-kit", None)},
    "b4": {("prc-consult", None), BUPE_HOME},
    "c1": {("prc-consult", None)},
    "c3": set(),
}


def _transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A Synthea-style transaction bundle: urn:uuid fullUrls and references."""
    text = json.dumps(resources)
    for r in resources:
        text = text.replace(f'"{r["resourceType"]}/{r["id"]}"', f'"urn:uuid:{r["id"]}"')
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{r['id']}",
                "resource": r,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for r in json.loads(text)
        ],
    }


def write_bundles(folder: Path) -> Path:
    """A as a transaction bundle; B and C together in one collection bundle."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patient-a.json").write_text(json.dumps(_transaction(PATIENT_A)))
    both = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in PATIENT_B + PATIENT_C],
    }
    (folder / "patients-b-c.json").write_text(json.dumps(both))
    (folder / "README.txt").write_text("not a chart: ignored")
    return folder


def write_ndjson(folder: Path) -> Path:
    """The same resources as a bulk export: one file per type."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = defaultdict(list)
    for r in PATIENT_C + PATIENT_A + PATIENT_B:
        by_type[r["resourceType"]].append(json.dumps(r))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def _by_visit(result: Any) -> dict[str, set[tuple[str, str | None]]]:
    return {r.visit.id: {(s.kind, s.variant) for s in r.results[0]} for r in result.visits}


def _cli_json(*args: str) -> dict[str, Any]:
    proc = run_cli("backtest", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture()
def charts(tmp_path: Path) -> Path:
    return write_bundles(tmp_path / "bundles")


def test_each_visit_replayed_with_the_chart_as_it_stood(charts: Path, pack: Pack) -> None:
    result = run_backtest(charts, [pack], workers=1)
    assert _by_visit(result) == EXPECTED
    assert [r.visit.id for r in result.visits] == ["b1", "b3", "b4", "a1", "c1", "a2", "c3"]
    assert (result.patients, result.skipped, result.workers) == (3, 1, 1)
    a1 = next(r for r in result.visits if r.visit.id == "a1")
    assert a1.patient == "pa" and a1.visit.time.isoformat() == "2020-01-10T14:00:00+00:00"
    evidence = {s.kind: s.evidence for s in a1.results[0]}
    assert evidence["moud-buprenorphine"] == ("Condition/a1-od",)
    c1 = next(r for r in result.visits if r.visit.id == "c1")
    assert c1.results[0][0].evidence == ("Condition/c-aud",)


def test_counts_overall_and_by_year(charts: Path) -> None:
    data = _cli_json(str(charts), "--workers", "1")
    assert (data["patients"], data["patients_with_visits"]) == (3, 3)
    assert (data["visits"], data["visits_skipped"]) == (7, 1)
    assert data["visits_by_year"] == {"2019": 3, "2020": 3, "2021": 1}
    base = data["pack"]
    assert base["visits_with_suggestions"] == 5
    counts = base["counts"]
    assert {k: v["visits"] for k, v in counts.items()} == {
        "prc-consult": 5,
        "moud-buprenorphine": 3,
        "moud-continue": 0,
        "naloxone-kit": 3,
    }
    assert counts["moud-buprenorphine"]["variants"] == {"ed-induction": 0, "home-initiation": 3}
    assert counts["moud-buprenorphine"]["cautions"] == {
        "pregnancy": 0,
        "sedatives": 0,
        "hepatic": 0,
        "alcohol": 0,
        "recent-methadone": 0,
        "confirm-oud": 1,
        "chart-incomplete": 0,
    }
    years = {
        y: {k: v["visits"] for k, v in d["counts"].items() if v["visits"]}
        for y, d in base["by_year"].items()
    }
    assert years == {
        "2019": {"prc-consult": 2, "moud-buprenorphine": 2, "naloxone-kit": 1},
        "2020": {"prc-consult": 3, "moud-buprenorphine": 1, "naloxone-kit": 2},
        "2021": {},
    }
    assert [d["visits_with_suggestions"] for d in base["by_year"].values()] == [2, 3, 0]


def test_json_report_shape(charts: Path, pack: Pack) -> None:
    data = _cli_json(str(charts))
    assert set(data) == {
        "input",
        "workers",
        "patients",
        "patients_with_visits",
        "visits",
        "visits_skipped",
        "visits_by_year",
        "pack",
        "compare",
        "per_visit",
    }
    assert data["input"] == {
        "path": str(charts),
        "bundle_files": 2,
        "ndjson_files": 0,
        "skipped_files": [],
    }
    assert data["compare"] is None and data["workers"] == min(os.cpu_count() or 1, 2)
    base = data["pack"]
    assert set(base) == {
        "id",
        "version",
        "hash",
        "path",
        "visits_with_suggestions",
        "counts",
        "by_year",
        "during",
    }
    assert (base["id"], base["version"]) == ("handoff-default", "2.0.0")
    assert base["hash"] == f"sha256:{pack.content_hash}"
    for counts in [base["counts"]] + [y["counts"] for y in base["by_year"].values()]:
        assert list(counts) == [
            "prc-consult",
            "moud-buprenorphine",
            "moud-continue",
            "naloxone-kit",
        ]
        for kind in counts.values():
            assert set(kind) == {"visits", "variants", "cautions"}
            assert isinstance(kind["visits"], int)
            assert sum(kind["variants"].values()) in (0, kind["visits"])
    assert report(run_backtest(charts, [pack], workers=1))["pack"] == base


def test_ndjson_gives_the_same_result_as_bundles(tmp_path: Path, charts: Path, pack: Pack) -> None:
    ndjson = write_ndjson(tmp_path / "export")
    assert _by_visit(run_backtest(ndjson, [pack], workers=1)) == EXPECTED
    from_bundles = _cli_json(str(charts), "--workers", "1")
    from_ndjson = _cli_json(str(ndjson), "--workers", "1")
    assert from_ndjson["input"] == {
        "path": str(ndjson),
        "bundle_files": 0,
        "ndjson_files": 5,
        "skipped_files": [],
    }
    del from_bundles["input"], from_ndjson["input"]
    assert from_ndjson == from_bundles


def test_ndjson_medications_are_shared_by_every_patient(tmp_path: Path, pack: Pack) -> None:
    """Bulk export: a Medication (no patient) resolves for each patient's orders; other
    patient-less resources (Organization) are left out."""
    folder = write_ndjson(tmp_path / "export")
    methadone = {
        "resourceType": "Medication",
        "id": "meth",
        "code": {"coding": [{"system": RXNORM, "code": "6813"}]},
    }
    orders = [
        {
            "resourceType": "MedicationRequest",
            "id": f"mr-{pid}",
            "status": "active",
            "intent": "order",
            "subject": {"reference": f"Patient/{pid}"},
            "medicationReference": {"reference": "Medication/meth"},
            "authoredOn": "2019-01-01T00:00:00Z",
        }
        for pid in ("pa", "pb")
    ]
    (folder / "Medication.ndjson").write_text(json.dumps(methadone) + "\n")
    (folder / "Organization.ndjson").write_text(
        json.dumps({"resourceType": "Organization", "id": "org"}) + "\n"
    )
    with (folder / "MedicationRequest.ndjson").open("a") as out:
        out.write("\n".join(json.dumps(o) for o in orders) + "\n")
    found = _by_visit(run_backtest(folder, [pack], workers=1))
    # on methadone: continue it; no buprenorphine offer
    assert found["a1"] == {("prc-consult", None), ("moud-continue", None), ("naloxone-kit", None)}
    assert found["b1"] == {("moud-continue", None)}
    assert found["a2"] == {("prc-consult", None), ("moud-continue", None), ("naloxone-kit", None)}
    assert found["c1"] == EXPECTED["c1"]


def test_workers_2_equals_workers_1(charts: Path, tmp_path: Path, pack: Pack) -> None:
    write_ndjson(charts / "more")  # the same patients again, as NDJSON: 6 patients
    one = run_backtest(charts, [pack], workers=1)
    two = run_backtest(charts, [pack], workers=2)
    assert two.workers == 2 and one.patients == two.patients == 6
    assert one.visits == two.visits and len(one.visits) == 14
    a, b = report(one), report(two)
    assert (a.pop("workers"), b.pop("workers")) == (1, 2)
    assert a == b


def cows_pack(tmp_path: Path, threshold: int) -> Path:
    """The default pack with another COWS threshold, beside the default value sets."""
    text = (RULES / "packs" / "default.yaml").read_text()
    assert "  cows_threshold: 8\n" in text
    path = tmp_path / "rules" / "packs" / f"cows{threshold}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(
        text.replace("  cows_threshold: 8\n", f"  cows_threshold: {threshold}\n").replace(
            "version: 2.0.0", f"version: 2.0.0-cows{threshold}"
        )
    )
    (tmp_path / "rules" / "valuesets").symlink_to(RULES / "valuesets")
    return path


def test_compare_lists_exactly_the_visits_that_differ(charts: Path, tmp_path: Path) -> None:
    """COWS >= 5: a1 (COWS 6) becomes an ED induction; b3 (COWS 4) does not change."""
    other = cows_pack(tmp_path, 5)
    data = _cli_json(str(charts), "--compare", str(other))
    compare = data["compare"]
    assert compare["version"] == "2.0.0-cows5"
    assert compare["counts"]["moud-buprenorphine"]["variants"] == {
        "ed-induction": 1,
        "home-initiation": 2,
    }
    assert compare["differences"] == [
        {
            "visit": "a1",
            "patient": "pa",
            "time": "2020-01-10T14:00:00+00:00",
            # the moment it first differs: when the COWS of 6 was recorded
            "moment": "2020-01-10T12:00:00+00:00",
            "added": [],
            "removed": [],
            "withheld": [],
            "changed": [
                {
                    "kind": "moud-buprenorphine",
                    "before": {
                        "kind": "moud-buprenorphine",
                        "variant": "home-initiation",
                        "cautions": ["confirm-oud"],
                        "evidence": ["Condition/a1-od"],
                    },
                    "after": {
                        "kind": "moud-buprenorphine",
                        "variant": "ed-induction",
                        "cautions": ["confirm-oud"],
                        "evidence": ["Condition/a1-od"],
                    },
                }
            ],
        }
    ]
    text = run_cli("backtest", str(charts), "--compare", str(other), "--workers", "1").stdout
    assert "1 visit(s) with different suggestions" in text
    assert "visit a1  patient pa  2020-01-10T14:00:00+00:00" in text
    assert "~ moud-buprenorphine: variant home-initiation -> ed-induction" in text


def test_compare_added_and_removed_kinds(charts: Path, pack: Pack, tmp_path: Path) -> None:
    """A pack without the naloxone rule: the kit is 'removed' at exactly b3, a1 and a2."""
    text = (RULES / "packs" / "default.yaml").read_text()
    start = text.index("  - id: naloxone-kit-at-risk")
    no_kit = text[:start].replace("version: 2.0.0", "version: 0.9.0")
    path = tmp_path / "packs" / "no-kit.yaml"
    path.parent.mkdir()
    path.write_text(no_kit)
    other = load_pack(path, RULES / "valuesets")
    result = run_backtest(charts, [pack, other], workers=1)
    diffs = report(result)["compare"]["differences"]
    assert [
        (d["visit"], [s["kind"] for s in d["removed"]], d["added"], d["changed"]) for d in diffs
    ] == [
        ("b3", ["naloxone-kit"], [], []),
        ("b4", [], [], []),
        ("a1", ["naloxone-kit"], [], []),
        ("a2", ["naloxone-kit"], [], []),
        ("c3", [], [], []),
    ]
    # b4 and c3: no kit either way, but the base pack withholds it: reported
    assert diffs[1]["withheld"] == [
        {"kind": "naloxone-kit", "before": ["has-naloxone"], "after": []}
    ]
    assert diffs[4]["withheld"] == [{"kind": "naloxone-kit", "before": ["deceased"], "after": []}]


def test_text_report(charts: Path) -> None:
    proc = run_cli("backtest", str(charts), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "(2 bundle files), 2 worker(s)" in out
    assert "patients 3 read, 3 with ED visits" in out
    assert "visits   7 ED visits replayed, 1 skipped (no time)" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["prc-consult"] == ["5"] and lines["naloxone-kit"] == ["3"]
    assert (
        "  2019     3 visits   prc-consult 2; moud-buprenorphine 2 (home-initiation 2); "
        "naloxone-kit 1" in out
    )
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.json", "{not json", "not valid JSON"),
        (
            "patient.json",
            json.dumps({"resourceType": "Patient", "id": "x"}),
            "expected a FHIR Bundle, got 'Patient'",
        ),
        (
            "doc.json",
            json.dumps({"resourceType": "Bundle", "type": "document", "entry": []}),
            "unsupported Bundle type 'document'",
        ),
        ("Condition.ndjson", json.dumps(PATIENT_B[3]) + "\n{oops\n", "not valid JSON"),
        ("Observation.ndjson", json.dumps({"id": "o1"}) + "\n", "resource has no resourceType"),
    ],
)
def test_malformed_file_exits_2_naming_it(
    charts: Path, name: str, content: str, message: str
) -> None:
    (charts / name).write_text(content)
    proc = run_cli("backtest", str(charts), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert str(charts / name) in proc.stderr and message in proc.stderr
    if name.endswith(".ndjson"):
        assert f"{charts / name}:{content.count(chr(10))}" in proc.stderr


def test_chart_error_in_a_worker_names_the_file(charts: Path, pack: Pack) -> None:
    bad = copy.deepcopy(PATIENT_A) + [{**PATIENT_A[2], "onsetDateTime": "2001-01-01"}]
    (charts / "patient-a.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in bad],
            }
        )
    )
    with pytest.raises(BacktestError, match="patient-a.json.*appears twice"):
        run_backtest(charts, [pack], workers=2)


def test_unreadable_path_exits_2(tmp_path: Path) -> None:
    proc = run_cli("backtest", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("backtest", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "no FHIR bundles (*.json) or NDJSON files" in proc.stderr


# ---------------------------------------------------------------------------------------
# the Synthea folder (100 patients, 227 ED visits; about 1 s on two cores)


def _synthea_conditions(codes: set[str]) -> list[tuple[str, str, str]]:
    """(patient, condition, encounter) ids of Synthea conditions with these SNOMED codes."""
    found = []
    for path in sorted(SYNTHEA.glob("*.json")):
        entries = orjson.loads(path.read_bytes())["entry"]
        pid = entries[0]["resource"]["id"]
        for e in entries:
            r = e["resource"]
            if r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"] in codes:
                found.append((pid, r["id"], r["encounter"]["reference"].removeprefix("urn:uuid:")))
    return found


def test_synthea_overdose_and_opioid_abuse_visits_are_found(pack: Pack) -> None:
    result = run_backtest(SYNTHEA, [pack], workers=2)
    assert (result.patients, len(result.visits), result.skipped) == (100, 227, 0)
    visits = {r.visit.id: r for r in result.visits}
    overdoses = _synthea_conditions({"55680006"})
    assert len(overdoses) == 30
    adults = 0
    for pid, cid, eid in overdoses:
        replayed = visits[eid]  # every overdose ED visit is replayed...
        assert replayed.patient == pid
        found = {s.kind: s for s in replayed.results[0]}
        # ... overdose alone (no naloxone given) is SUD, not OUD, evidence: a coach, no MOUD;
        # v2: an overdose this visit always triggers a kit, at any age
        assert set(found) <= {"prc-consult", "naloxone-kit"}
        assert f"Condition/{cid}" in found["naloxone-kit"].evidence
        if "prc-consult" in found:
            adults += 1
            assert f"Condition/{cid}" in found["prc-consult"].evidence
    assert adults == 28  # the other two were 15 and 17 years old
    # Synthea codes repeat overdoses only as the ED encounter's reasonCode (83 of 113
    # visits): v2 reads the current encounter's reasonCode as a condition this visit, so
    # each of them is an overdose this visit (a kit, the Encounter its evidence)
    reason_visits = [
        e["resource"]["id"]
        for p in sorted(SYNTHEA.glob("*.json"))
        for e in orjson.loads(p.read_bytes())["entry"]
        if e["resource"]["resourceType"] == "Encounter"
        and any(
            c["code"] == "55680006"
            for r in e["resource"].get("reasonCode", ())
            for c in r["coding"]
        )
    ]
    assert len(reason_visits) == 113 and set(reason_visits) <= set(visits)
    without_kit = []
    for eid in reason_visits:
        kit = {s.kind: s for s in visits[eid].results[0]}.get("naloxone-kit")
        if kit is None:
            without_kit.append(eid)
        else:
            assert f"Encounter/{eid}" in kit.evidence
    # one patient died during that visit (before its end, the replay time): withheld
    assert len(without_kit) == 1
    abuse_patients = {pid for pid, _c, _e in _synthea_conditions({"5602001"})}
    assert len(abuse_patients) == 4
    abuse_visits = [r for r in result.visits if r.patient in abuse_patients]
    assert len(abuse_visits) == 3  # two of the four never came to the ED
    for r in abuse_visits:
        assert {(s.kind, s.variant) for s in r.results[0]} == {
            ("prc-consult", None),
            BUPE_HOME,
            ("naloxone-kit", None),
        }
        assert all(any(e.startswith("Condition/") for e in s.evidence) for s in r.results[0])
    counts = report(result)["pack"]["counts"]
    # v1: 34, 3, 0, 3. v2: overdoses coded as the visit's reason, and overdoses in the year
    # before a visit, bring the coach and a kit
    assert {k: v["visits"] for k, v in counts.items()} == {
        "prc-consult": 129,
        "moud-buprenorphine": 3,
        "moud-continue": 0,
        "naloxone-kit": 130,
    }


# ---------------------------------------------------------------------------------------
# within the visit: every moment the chart changed (issue 12 item 4)


def test_each_visit_is_replayed_at_every_moment_it_changed(charts: Path, pack: Pack) -> None:
    """a1: arrival, the overdose, the COWS, discharge; the coach is first suggested when the
    overdose is recorded (10:30), not at arrival."""
    result = run_backtest(charts, [pack], workers=1)
    a1 = next(r for r in result.visits if r.visit.id == "a1")
    assert [t.isoformat() for t in a1.visit.moments] == [
        "2020-01-10T10:00:00+00:00",
        "2020-01-10T10:30:00+00:00",
        "2020-01-10T12:00:00+00:00",
        "2020-01-10T14:00:00+00:00",
    ]
    (timeline,) = a1.timelines
    assert [m.outcome.suggested for m in timeline][0] == ()  # nothing at arrival
    assert timeline[-1].outcome.suggested == a1.results[0]
    data = report(result)
    (row,) = [v for v in data["per_visit"] if v["visit"] == "a1"]
    assert row["moments"] == 4 and row["start"] == "2020-01-10T10:00:00+00:00"
    assert row["packs"][0]["first_suggested"] == {
        "prc-consult": "2020-01-10T10:30:00+00:00",
        "moud-buprenorphine": "2020-01-10T10:30:00+00:00",
        "naloxone-kit": "2020-01-10T10:30:00+00:00",
    }
    during = data["pack"]["during"]
    assert (
        during["counts"]["prc-consult"]["visits"] >= data["pack"]["counts"]["prc-consult"]["visits"]
    )


def test_an_open_visit_is_replayed_until_its_last_change(pack: Pack) -> None:
    """A visit still in progress (no end): its replay time is the last time the chart
    changed since its start (P01: the COWS at 13:00), so what was recorded is seen."""
    result = run_backtest(SCENARIOS / "P01-oud-withdrawal.json", [pack], workers=1)
    (visit,) = result.visits
    assert visit.visit.end is None
    assert visit.visit.time == datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
    assert [(s.kind, s.variant) for s in visit.results[0]] == [
        ("prc-consult", None),
        ("moud-buprenorphine", "ed-induction"),
        ("naloxone-kit", None),
    ]


def test_cows_threshold_change_shows_on_the_public_charts(tmp_path: Path, pack: Pack) -> None:
    """COWS 12 instead of 8: exactly the scenarios with a COWS of 8 to 11 this visit change
    from ED induction to home initiation, each from the moment the COWS was recorded."""
    other = load_pack(cows_pack(tmp_path, 12), RULES / "valuesets")
    data = report(run_backtest(SCENARIOS, [pack, other], workers=1))
    diffs = data["compare"]["differences"]
    assert {d["visit"] for d in diffs} == {"P01-enc", "P08-enc", "P25-enc"}
    for d in diffs:
        (change,) = d["changed"]
        assert (change["before"]["variant"], change["after"]["variant"]) == (
            "ed-induction",
            "home-initiation",
        )
        chart = json.loads((SCENARIOS / _scenario(d["patient"])).read_text())
        cows = [
            e["resource"]
            for e in chart["entry"]
            if e["resource"]["resourceType"] == "Observation"
            and e["resource"]["code"]["coding"][0]["code"] == "cows-total"
        ]
        assert (
            d["moment"]
            == max(datetime.fromisoformat(c["effectiveDateTime"]) for c in cows).isoformat()
        )


def _scenario(patient: str) -> str:
    """A scenario's file name from its patient id (``P01-pt`` -> ``P01-oud-....json``)."""
    (path,) = SCENARIOS.glob(f"{patient[:3]}-*.json")
    return path.name


def test_cows_threshold_change_on_synthea(tmp_path: Path, pack: Pack) -> None:
    """Synthea records no COWS: a threshold change alone changes nothing there. With a COWS
    of 10 added mid-visit to a Synthea opioid-abuse patient's ED visit (a fixture), COWS 11
    instead of 8 changes exactly that visit, from that moment."""
    other = load_pack(cows_pack(tmp_path, 11), RULES / "valuesets")
    plain = report(run_backtest(SYNTHEA, [pack, other], workers=2))
    assert plain["compare"]["differences"] == []
    visit, path = _synthea_abuse_visit(pack)
    bundle = orjson.loads(path.read_bytes())
    enc = next(e for e in bundle["entry"] if e["resource"]["id"] == visit.id)
    start = datetime.fromisoformat(enc["resource"]["period"]["start"])
    when = (start + (visit.time - start) / 2).isoformat()
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:fixture-cows",
            "resource": {
                "resourceType": "Observation",
                "id": "fixture-cows",
                "status": "final",
                "code": COWS,
                "subject": {"reference": bundle["entry"][0]["fullUrl"]},
                "encounter": {"reference": enc["fullUrl"]},
                "effectiveDateTime": when,
                "valueQuantity": {"value": 10},
            },
        }
    )
    folder = tmp_path / "synthea-cows"
    folder.mkdir()
    (folder / path.name).write_bytes(orjson.dumps(bundle))
    diffs = report(run_backtest(folder, [pack, other], workers=1))["compare"]["differences"]
    assert [(d["visit"], d["moment"]) for d in diffs] == [(visit.id, when)]
    (change,) = diffs[0]["changed"]
    assert (change["before"]["variant"], change["after"]["variant"]) == (
        "ed-induction",
        "home-initiation",
    )


def _synthea_abuse_visit(pack: Pack) -> tuple[Any, Path]:
    """The first Synthea ED visit at which buprenorphine is suggested, and its file."""
    for path in sorted(SYNTHEA.glob("*.json")):
        for replayed in run_backtest(path, [pack], workers=1).visits:
            if any(s.kind == "moud-buprenorphine" for s in replayed.results[0]):
                return replayed.visit, path
    raise AssertionError("no Synthea visit with buprenorphine")
