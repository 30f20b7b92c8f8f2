"""`handoff audit export`: FHIR R4 AuditEvent NDJSON (IHE BALP patterns) that parses with
fhirclient and maps back to the chain, CSV that round-trips, and the export logging itself."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fhirclient.models.auditevent import AuditEvent

from smartapp.audit import log as referral_log
from smartapp.audit.canonical import GENESIS, event_hash, format_time, parse_time
from smartapp.audit.cli import audit
from smartapp.audit.export import csv_records, write_export
from smartapp.audit.verify import verify

ISS = "https://ehr.example.org/fhir"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
WHO = dict(user_ref="Practitioner/dr-1", iss=ISS, patient_id="P01-pt", encounter_id="P01-enc")


def realistic_log(db) -> None:
    """One launch's events as the app writes them, plus an auditor's read and an unknown type."""
    with db.session() as s:
        referral_log.append(
            s, "launch", **WHO, data={"scope": "launch openid", "registration": "sandbox"}
        )
        referral_log.append(
            s,
            "suggestions-shown",
            **WHO,
            data={
                "pack": {"id": "default", "version": "1"},
                "suggestions": [
                    {
                        "kind": "prc-consult",
                        "variant": None,
                        "cautions": [],
                        "rule": "r1",
                        "evidence": ["Condition/P01-cond1", "Observation/P01-cows"],
                    },
                    {
                        "kind": "moud-buprenorphine",
                        "variant": "ed-induction",
                        "cautions": [],
                        "rule": "r2",
                        "evidence": ["Condition/P01-cond1"],
                    },
                ],
            },
        )
        referral_log.append(s, "decision", **WHO, data={"referral": "ref-1", "items": []})
        referral_log.append(
            s,
            "write-attempt",
            **WHO,
            data={
                "referral": "ref-1",
                "attempt": 1,
                "outcome": "queued",
                "error": "HTTP 503",
                "written": None,
            },
        )
        referral_log.append(
            s,
            "write-attempt",
            **WHO,
            data={
                "referral": "ref-1",
                "attempt": 2,
                "outcome": "written",
                "error": None,
                "written": [
                    {"resourceType": "ServiceRequest", "id": "sr-1", "status": "201 Created"},
                    {"resourceType": "DocumentReference", "id": "doc-1", "status": "201 Created"},
                ],
            },
        )
        referral_log.append(
            s,
            "write-attempt",
            **WHO,
            data={
                "referral": "ref-2",
                "attempt": 1,
                "outcome": "failed",
                "error": "HTTP 422",
                "written": None,
            },
        )
        referral_log.append(
            s, "write-held", **WHO, data={"referral": "ref-3", "reason": "no write scope"}
        )
        referral_log.record_read(
            s, "Practitioner/auditor-1", "events of P01, May", patient_id="P01-pt"
        )
        referral_log.append(s, "rules-reloaded", data={"pack": "default"})


@pytest.fixture
def exported(sqlite_db, sqlite_url, key_path, tmp_path):
    """Run the export CLI (in process) on a realistic log; returns a runner for more exports."""
    realistic_log(sqlite_db)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            audit,
            [
                "--instance-path",
                str(tmp_path / "instance"),
                "export",
                "--database-url",
                sqlite_url,
                "--user",
                "auditor-ann",
                *args,
            ],
            env={"HANDOFF_AUDIT_SIGNING_KEY": str(key_path)},
        )
        assert result.exit_code == 0, result.output
        return result.exit_code, result.stderr

    return run


def read_ndjson(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def by_subtype(resources: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for resource in resources:
        code = next(
            c["code"]
            for c in resource["subtype"]
            if c["system"] == "urn:handoff:referral-log:event-type"
        )
        found.setdefault(code, []).append(resource)
    return found


def agent(resource: dict, system: str, code: str) -> dict:
    return next(
        a
        for a in resource["agent"]
        if any(c["code"] == code and c["system"] == system for c in a["type"]["coding"])
    )


def entity_whats(resource: dict) -> set[str]:
    return {e["what"].get("reference") for e in resource["entity"]} - {None}


def test_every_line_parses_as_fhir_r4_audit_event(exported, tmp_path):
    out = tmp_path / "audit.ndjson"
    exported("--format", "ndjson", "--out", str(out))
    resources = read_ndjson(out)
    assert len(resources) == 9
    for resource in resources:
        parsed = AuditEvent(resource, strict=True)  # raises on any R4 structure error
        assert parsed.as_json()["resourceType"] == "AuditEvent"
        assert parsed.recorded.datetime.tzinfo is not None


def test_the_command_gives_the_same_file_by_one_process_or_several(exported, tmp_path):
    """`--jobs` (every core by default) changes how the lines are made, not what they are:
    the export in one process, made right after, holds the same lines, and one more (the
    first export's own log entry)."""
    for fmt in ("ndjson", "csv"):
        many, one = tmp_path / f"many.{fmt}", tmp_path / f"one.{fmt}"
        exported("--format", fmt, "--out", str(many), "--jobs", "3")
        exported("--format", fmt, "--out", str(one), "--jobs", "1")
        lines = one.read_text(encoding="utf-8").splitlines(keepends=True)
        assert "".join(lines[:-1]) == many.read_text(encoding="utf-8") and len(lines) > 8


def test_balp_elements(exported, tmp_path):
    out = tmp_path / "audit.ndjson"
    exported("--format", "ndjson", "--out", str(out))
    events = by_subtype(read_ndjson(out))
    pt = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

    for resource in (r for group in events.values() for r in group):
        labels = resource["meta"]["security"]
        security = {(c["system"].rsplit("/", 1)[1], c["code"]) for c in labels}
        assert security == {("v3-Confidentiality", "R"), ("v3-ActCode", "SUD")}
        assert resource["source"]["observer"]["display"] == "Handoff"
        assert resource["outcome"] in {"0", "4", "8"}

    # Create pattern: the successful write.
    queued, written, failed = events["write-attempt"]
    assert written["type"]["code"] == "rest" and written["action"] == "C"
    assert {"create", "transaction"} <= {c["code"] for c in written["subtype"]}
    assert written["outcome"] == "0"
    user = agent(written, pt, "AUT")
    assert user["who"] == {"reference": "Practitioner/dr-1"} and user["requestor"] is True
    assert agent(written, DCM, "110153")["who"]["display"] == "Handoff"  # client = source
    server = agent(written, DCM, "110152")
    assert server["network"] == {"address": ISS, "type": "5"} and server["requestor"] is False
    patient = next(e for e in written["entity"] if e["what"].get("reference") == "Patient/P01-pt")
    assert patient["type"]["code"] == "1" and patient["role"]["code"] == "1"
    assert {"ServiceRequest/sr-1", "DocumentReference/doc-1", "Encounter/P01-enc"} <= (
        entity_whats(written)
    )
    report = next(
        e for e in written["entity"] if e["what"].get("reference") == "DocumentReference/doc-1"
    )
    assert report["role"]["code"] == "3"  # a document is a Report in BALP's RestObjectRoles
    # Failures: 4 for a write that will be retried, 8 for one that failed or was held.
    assert (queued["outcome"], queued["outcomeDesc"]) == ("4", "HTTP 503")
    assert (failed["outcome"], failed["outcomeDesc"]) == ("8", "HTTP 422")
    (held,) = events["write-held"]
    assert held["outcome"] == "8" and "no write scope" in held["outcomeDesc"]

    # Read pattern: suggestions shown (chart read) and the auditor's read.
    (shown,) = events["suggestions-shown"]
    assert (shown["type"]["code"], shown["action"]) == ("rest", "R")
    assert "read" in {c["code"] for c in shown["subtype"]}
    assert agent(shown, pt, "IRCP")["requestor"] is True
    assert agent(shown, DCM, "110152")["who"]["display"] == "Handoff"  # read: client = dest.
    assert agent(shown, DCM, "110153")["who"]["display"] == ISS
    assert {"Condition/P01-cond1", "Observation/P01-cows"} <= entity_whats(shown)
    (read,) = events["audit-read"]
    assert read["action"] == "R"
    assert agent(read, pt, "IRCP")["who"] == {"reference": "Practitioner/auditor-1"}
    assert any(e.get("description") == "events of P01, May" for e in read["entity"])

    (launch,) = events["launch"]
    assert (launch["type"]["code"], launch["subtype"][0]["code"]) == ("110114", "110122")
    (decision,) = events["decision"]
    assert (decision["type"]["code"], decision["action"]) == ("110110", "C")
    (unknown,) = events["rules-reloaded"]
    assert unknown["type"] == {
        "system": "urn:handoff:referral-log:event-type",
        "code": "rules-reloaded",
    }
    assert unknown["action"] == "E" and [a["requestor"] for a in unknown["agent"]] == [True]


def test_each_line_maps_back_to_its_chain_link(exported, tmp_path, sqlite_db):
    out = tmp_path / "audit.ndjson"
    exported("--out", str(out))
    with sqlite_db.session() as session:
        stored = {e.seq: e.hash for e in referral_log.events(session)}
    previous = GENESIS
    for resource in read_ndjson(out):
        link = next(
            e
            for e in resource["entity"]
            if e["what"].get("identifier", {}).get("system") == "urn:handoff:referral-log"
            and "detail" in e
        )
        detail = {
            d["type"]: d.get("valueString") or d.get("valueBase64Binary") for d in link["detail"]
        }
        seq = int(link["what"]["identifier"]["value"])
        assert resource["id"] == detail["hash"] == stored[seq]
        canonical = base64.b64decode(detail["canonical"])
        assert hashlib.sha256(canonical).hexdigest() == detail["hash"]  # offline recompute
        assert json.loads(canonical)["seq"] == seq and detail["prev_hash"] == previous
        previous = detail["hash"]


def test_the_export_is_itself_logged(exported, tmp_path, sqlite_db, signer):
    out = tmp_path / "audit.csv"
    exported("--format", "csv", "--out", str(out), "--from", "2000-01-01")
    with sqlite_db.session() as session:
        last = referral_log.events(session)[-1]
        assert verify(session, [signer.public_key]).ok
    assert (last.type, last.user_ref) == ("audit-export", "auditor-ann")
    assert last.data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert last.data | {"sha256": None} == {
        "from": "2000-01-01T00:00:00.000000Z",
        "to": None,
        "format": "csv",
        "events": 9,
        "first_seq": 1,
        "last_seq": 9,
        "sha256": None,
        "out": str(out),
    }
    # The next export shows it: DICOM Export, the OS-style user as an identifier.
    again = tmp_path / "again.ndjson"
    exported("--out", str(again))
    (logged,) = by_subtype(read_ndjson(again))["audit-export"]
    assert (logged["type"]["code"], logged["action"]) == ("110106", "R")
    assert logged["agent"][0]["who"]["identifier"]["value"] == "auditor-ann"


def test_csv_round_trips(exported, tmp_path, sqlite_db):
    out = tmp_path / "audit.csv"
    exported("--format", "csv", "--out", str(out))
    with out.open(encoding="utf-8", newline="") as handle:
        records = csv_records(handle)
    with sqlite_db.session() as session:
        stored = referral_log.events(session)[: len(records)]
    assert len(records) == 9
    for record, event in zip(records, stored, strict=True):
        for name in (
            "seq",
            "type",
            "user_ref",
            "iss",
            "patient_id",
            "encounter_id",
            "data",
            "prev_hash",
            "hash",
        ):
            assert getattr(record, name) == getattr(event, name), name
        assert record.at == event.at.replace(tzinfo=event.at.tzinfo or UTC)
        assert event_hash(record) == record.hash  # the CSV alone re-verifies


def test_date_range(exported, tmp_path, sqlite_db):
    with sqlite_db.session() as session:  # the day the events were written (not "now")
        days = {parse_time(format_time(e.at)).date() for e in referral_log.events(session)}
    (today,) = days
    ranges = {
        (str(today), str(today)): 9,
        (str(today + timedelta(days=1)), None): 0,
        (None, str(today - timedelta(days=1))): 0,
    }
    for (start, end), count in ranges.items():
        out = tmp_path / f"{start}-{end}.csv"
        args = ["--format", "csv", "--out", str(out)]
        args += ["--from", start] if start else []
        args += ["--to", end] if end else []
        _, stderr = exported(*args)
        assert f"exported {count} events" in stderr
        assert len(out.read_text().splitlines()) == count + 1  # header


def test_export_to_stdout_matches_the_logged_digest(sqlite_db):
    realistic_log(sqlite_db)
    buffer = io.StringIO()
    with sqlite_db.session() as session:
        result = write_export(session, buffer, "ndjson", None, None)
    assert result.events == 9 and (result.first_seq, result.last_seq) == (1, 9)
    assert result.sha256 == hashlib.sha256(buffer.getvalue().encode()).hexdigest()
