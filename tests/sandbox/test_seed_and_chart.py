"""Seeding with time shift, the ED list and the chart page (including Handoff's writes)."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from tests.sandbox.conftest import NOW, RunningSandbox, start_sandbox


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_scenario_dates_are_shifted_to_now(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    def read(path: str) -> dict:
        return user_api.get(f"{sandbox.fhir}/{path}", timeout=10).json()

    encounter = read("Encounter/P01-enc")
    # In the scenario, the visit starts at 10:00 and "now" is 15:00: 5 hours before now.
    assert encounter["period"]["start"] == iso(NOW - timedelta(hours=5))
    assert encounter["status"] == "in-progress"
    assert read("Observation/P01-cows2")["effectiveDateTime"] == iso(NOW - timedelta(hours=2))
    assert read("Patient/P16-pt")["deceasedDateTime"] == iso(NOW - timedelta(hours=1))
    # 2025-10-16T15:00Z moves by the exact delta (55 days 18 h 30 min) ...
    assert read("Condition/P01-cond1")["onsetDateTime"] == "2025-12-11T09:30:00Z"
    # ... and date-only values by whole days (delta rounded: 56 days).
    assert read("Patient/P01-pt")["birthDate"] == "1992-12-06"


def test_ed_list_signs_in_and_lists_scenario_patients(sandbox: RunningSandbox) -> None:
    page = requests.get(f"{sandbox.base}/", timeout=10)
    assert page.status_code == 200
    assert "Avery Demo, MD" in page.text
    rows = re.findall(r'<tr data-patient-id="([^"]+)">(.*?)</tr>', page.text, re.S)
    assert [pid for pid, _ in rows] == [f"P{n:02d}-pt" for n in range(1, 17)]
    for pid, row in rows:
        links = re.findall(r"<a [^>]*>([^<]*)</a>", row)
        assert links == ["Launch Handoff"], pid
        assert f'href="/chart/{pid}"' in row
    row = dict(rows)
    assert "deceased" in row["P16-pt"] and "deceased" not in row["P01-pt"]
    assert "Emergency room admission" in row["P01-pt"]
    assert "5 h 00 min ago" in row["P01-pt"]


def test_chart_shows_what_handoff_wrote(
    sandbox: RunningSandbox, user_api: requests.Session
) -> None:
    note = "Linkage note: warm handoff to the peer recovery coach, telehealth at 10:00."
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0000-sr",
                "request": {"method": "POST", "url": "ServiceRequest"},
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "code": {"text": "Referral to peer recovery coach"},
                    "subject": {"reference": "Patient/P07-pt"},
                    "authoredOn": iso(NOW),
                },
            },
            {
                "request": {"method": "POST", "url": "DocumentReference"},
                "resource": {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "subject": {"reference": "Patient/P07-pt"},
                    "date": iso(NOW),
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/plain; charset=utf-8",
                                "title": "Linkage note",
                                "data": base64.b64encode(note.encode()).decode(),
                            }
                        }
                    ],
                    "context": {"related": [{"reference": "urn:uuid:0000-sr"}]},
                },
            },
            {
                "request": {"method": "POST", "url": "Task"},
                "resource": {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "code": {"text": "Warm handoff"},
                    "focus": {"reference": "urn:uuid:0000-sr"},
                    "for": {"reference": "Patient/P07-pt"},
                    "authoredOn": iso(NOW),
                },
            },
        ],
    }
    assert user_api.post(sandbox.fhir, json=bundle, timeout=10).status_code == 200
    page = sandbox.browser.get(f"{sandbox.base}/chart/P07-pt", timeout=10)
    assert page.status_code == 200
    assert 'data-patient-id="P07-pt"' in page.text
    assert "Referral to peer recovery coach" in page.text
    assert note in page.text  # the note is decoded and shown
    assert "Warm handoff" in page.text
    assert "F11.20" in page.text  # problems come from the chart too
    assert requests.get(f"{sandbox.base}/chart/nobody", timeout=10).status_code == 404


def test_restart_keeps_data_and_key_until_stale(tmp_path: Path) -> None:
    first = start_sandbox(tmp_path)
    try:
        api = first.api(first.token("P01-pt", "launch user/*.cruds"))
        marker = {
            "resourceType": "Practitioner",
            "id": "restart-marker",
            "name": [{"family": "Marker"}],
        }
        assert (
            api.put(
                f"{first.fhir}/Practitioner/restart-marker", json=marker, timeout=10
            ).status_code
            == 201
        )
        kid = requests.get(f"{first.base}/auth/jwks", timeout=10).json()["keys"][0]["kid"]
    finally:
        first.handle.stop()

    same = start_sandbox(tmp_path)  # same database, same now: no reseed
    try:
        api = same.api(same.token("P01-pt", "launch user/*.cruds"))
        assert api.get(f"{same.fhir}/Practitioner/restart-marker", timeout=10).status_code == 200
        assert requests.get(f"{same.base}/auth/jwks", timeout=10).json()["keys"][0]["kid"] == kid
    finally:
        same.handle.stop()

    later = start_sandbox(tmp_path, now=NOW + timedelta(hours=13))  # stale: reseeded
    try:
        api = later.api(later.token("P01-pt", "launch user/*.cruds"))
        assert api.get(f"{later.fhir}/Practitioner/restart-marker", timeout=10).status_code == 404
        start = api.get(f"{later.fhir}/Encounter/P01-enc", timeout=10).json()["period"]["start"]
        assert start == iso(NOW + timedelta(hours=8))
    finally:
        later.handle.stop()


def test_synthea_patients_are_in_the_ed_now(tmp_path: Path) -> None:
    started = time.perf_counter()
    running = start_sandbox(tmp_path, seed=("scenarios", "synthea"), now=None)
    seconds = time.perf_counter() - started
    try:
        assert seconds < 60, f"seeding took {seconds:.1f} s"
        page = running.browser.get(f"{running.base}/", timeout=30)
        rows = re.findall(r'<tr data-patient-id="([^"]+)">(.*?)</tr>', page.text, re.S)
        ids = [pid for pid, _ in rows]
        assert ids[:16] == [f"P{n:02d}-pt" for n in range(1, 17)]
        synthea = [pid for pid in ids if not re.match(r"^P\d{2}", pid)]
        assert len(synthea) == 100
        assert sum("deceased" in row for pid, row in rows if pid in synthea) >= 17
        # Abdul Koepp, a Synthea patient, is in an in-progress emergency visit that began
        # within the last few hours.
        patient_id = "018f428e-34f6-4707-8009-5ad742f901e7"
        assert patient_id in synthea
        api = running.api(running.token(patient_id, "launch openid fhirUser patient/*.rs"))
        visits = api.get(
            f"{running.fhir}/Encounter",
            params={"patient": patient_id, "status": "in-progress"},
            timeout=10,
        )
        entries = visits.json()["entry"]
        assert len(entries) == 1
        encounter = entries[0]["resource"]
        assert encounter["class"]["code"] == "EMER"
        assert "end" not in encounter["period"]
        start = datetime.fromisoformat(encounter["period"]["start"].replace("Z", "+00:00"))
        assert timedelta(0) < datetime.now(UTC) - start < timedelta(hours=6)
        # The rest of the history moved with it: nothing in this chart lies in the future.
        observations = api.get(
            f"{running.fhir}/Observation", params={"_sort": "-date", "_count": "1"}, timeout=10
        ).json()
        latest = observations["entry"][0]["resource"]["effectiveDateTime"]
        assert datetime.fromisoformat(latest) <= datetime.now(UTC)
    finally:
        running.handle.stop()
