"""Seeding: the base directory data, the scenario charts and the Synthea patients.

Runs at start when the database is empty, was seeded for a "now" more than 12 hours away,
or with other data sets. Dates are shifted so every patient is in the ED right now while
the relative times inside each chart stay as they were:

- scenarios were written for 2026-11-20T15:00:00Z; every date moves by now - that instant
  (date-only values by the same delta rounded to whole days);
- each Synthea patient moves by (now - 10 min) - (end, or start, of their latest encounter);
  that encounter becomes the current ED visit when it was an emergency one, otherwise a new
  in-progress ED encounter starting 40 minutes ago is added.

Rows go in with executemany in one transaction; parsing uses orjson.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from smartapp.sandbox.config import (
    COACH_TEAM_ORG_ID,
    DEMO_PHYSICIAN_ID,
    DEMO_PHYSICIAN_NAME,
    DEMO_USERS,
    HOSPITAL_ORG_ID,
)
from smartapp.sandbox.db import Database, history, resources, search_index
from smartapp.sandbox.fhir.bundle_entries import rewrite_references
from smartapp.sandbox.fhir.results import PreparedResource
from smartapp.sandbox.fhir.service import FhirService
from smartapp.sandbox.fhirtime import format_instant, parse_instant, shift_resource_dates

log = logging.getLogger(__name__)

SCENARIO_NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
RESEED_AFTER = timedelta(hours=12)
#: Seed set names. "synthea-billing" adds Synthea's Claim and ExplanationOfBenefit resources:
#: they are a third of the Synthea rows and no clinical screen or rule reads them, so they are
#: skipped by default to keep start-up fast.
KNOWN_SETS = ("scenarios", "synthea", "synthea-billing")
#: Version of base_resources(): a database seeded with another version is reseeded, so that
#: new directory data (e.g. the staff Practitioners) appears without deleting the file.
BASE_VERSION = 2
BILLING_TYPES = frozenset({"Claim", "ExplanationOfBenefit"})
ED_ENCOUNTER_NS = uuid.UUID("4f0c8b2e-8a51-4d0e-9a55-6b1c3f3f2a10")
EMERGENCY_CLASS = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "code": "EMER",
    "display": "emergency",
}
ER_ADMISSION = {
    "coding": [
        {
            "system": "http://snomed.info/sct",
            "code": "50849002",
            "display": "Emergency room admission",
        }
    ],
    "text": "Emergency room admission",
}
_CHUNK = 5000


@dataclass
class SeedReport:
    """What a seeding run loaded and how long it took."""

    sets: tuple[str, ...]
    resources: int
    index_rows: int
    seconds: float


def base_resources() -> list[dict]:
    """Directory data every sandbox has: a Practitioner per sandbox user (the demo physician,
    the coaches, the auditor, the program manager), the hospital, the coach team."""
    return [
        *(user.practitioner() for user in DEMO_USERS),
        {
            "resourceType": "Organization",
            "id": HOSPITAL_ORG_ID,
            "active": True,
            "name": "Sandbox General Hospital",
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                            "code": "prov",
                        }
                    ]
                }
            ],
        },
        {
            "resourceType": "Organization",
            "id": COACH_TEAM_ORG_ID,
            "active": True,
            "name": "Peer Recovery Coach Team",
            "partOf": {"reference": f"Organization/{HOSPITAL_ORG_ID}"},
        },
        {
            "resourceType": "Location",
            "id": "sandbox-ed",
            "status": "active",
            "name": "Emergency Department",
            "managingOrganization": {"reference": f"Organization/{HOSPITAL_ORG_ID}"},
        },
    ]


def _resources_of(bundle: dict) -> list[dict]:
    """Bundle resources with bundle-local references (urn:uuid fullUrls) made Type/id."""
    entries = [e for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)]
    refmap = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if e.get("fullUrl") and e["resource"].get("id")
    }
    out = [e["resource"] for e in entries]
    if refmap:
        rewrite_references(out, refmap)
    return out


def _shift(items: Iterable[dict], delta: timedelta) -> None:
    delta = timedelta(seconds=round(delta.total_seconds()))
    days = round(delta.total_seconds() / 86_400)
    for resource in items:
        shift_resource_dates(resource, delta, days)


def scenario_resources(folder: Path, now: datetime) -> list[dict]:
    """The scenario charts, shifted from 2026-11-20T15:00Z to `now`."""
    out: list[dict] = []
    for path in sorted(folder.glob("P*.json")):
        out.extend(_resources_of(orjson.loads(path.read_bytes())))
    _shift(out, now - SCENARIO_NOW)
    _demo_contact(out)
    return out


def _demo_contact(items: list[dict]) -> None:
    """A fictional phone (555-01xx, reserved for fiction) for each scenario patient and a bed
    in the ED for each visit in progress, where the chart has none: the coach's worklist
    shows them (issue 11)."""
    patients = [r for r in items if r.get("resourceType") == "Patient"]
    for number, patient in enumerate(patients, start=1):
        patient.setdefault(
            "telecom", [{"system": "phone", "value": f"(555) 555-01{number:02d}", "use": "mobile"}]
        )
    visits = [
        r
        for r in items
        if r.get("resourceType") == "Encounter" and r.get("status") == "in-progress"
    ]
    for bed, encounter in enumerate(visits, start=1):
        encounter.setdefault(
            "location", [{"location": {"display": f"ED bed {bed}"}, "status": "active"}]
        )


def _encounter_anchor(encounter: dict) -> datetime | None:
    period = encounter.get("period") or {}
    text = period.get("end") or period.get("start")
    return parse_instant(text) if isinstance(text, str) else None


def synthea_patient(bundle: dict, now: datetime, *, billing: bool) -> list[dict]:
    """One Synthea patient's resources, shifted so that they are in the ED now."""
    items = [
        r for r in _resources_of(bundle) if billing or r.get("resourceType") not in BILLING_TYPES
    ]
    patient = next((r for r in items if r.get("resourceType") == "Patient"), None)
    if patient is None:
        return items
    encounters = [
        (anchor, r)
        for r in items
        if r.get("resourceType") == "Encounter" and (anchor := _encounter_anchor(r)) is not None
    ]
    last = max(encounters, key=lambda pair: pair[0]) if encounters else None
    anchor = last[0] if last else now
    _shift(items, (now - timedelta(minutes=10)) - anchor)
    if last is not None and (last[1].get("class") or {}).get("code") == "EMER":
        current = last[1]
        current["status"] = "in-progress"
        current.get("period", {}).pop("end", None)
    else:
        items.append(
            {
                "resourceType": "Encounter",
                "id": str(uuid.uuid5(ED_ENCOUNTER_NS, patient["id"])),
                "status": "in-progress",
                "class": dict(EMERGENCY_CLASS),
                "type": [ER_ADMISSION],
                "subject": {"reference": f"Patient/{patient['id']}"},
                "participant": [
                    {
                        "individual": {
                            "reference": f"Practitioner/{DEMO_PHYSICIAN_ID}",
                            "display": DEMO_PHYSICIAN_NAME,
                        }
                    }
                ],
                "period": {"start": format_instant(now - timedelta(minutes=40))},
                "serviceProvider": {"reference": f"Organization/{HOSPITAL_ORG_ID}"},
            }
        )
    return items


def synthea_resources(folder: Path, now: datetime, *, billing: bool) -> Iterator[dict]:
    """All Synthea patients, one bundle at a time."""
    for path in sorted(folder.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        yield from synthea_patient(bundle, now, billing=billing)


def seed_state(db: Database) -> dict | None:
    """What the database was last seeded with (None: never)."""
    with db.read() as conn:
        raw = db.get_meta(conn, "seed")
    return orjson.loads(raw) if raw else None


def needs_seeding(db: Database, sets: tuple[str, ...], now: datetime) -> bool:
    """Empty, seeded for another `now` (more than 12 h away), with other data sets or
    another version of the base resources."""
    state = seed_state(db)
    if state is None or sorted(state.get("sets", [])) != sorted(sets):
        return True
    if state.get("base", 1) != BASE_VERSION:
        return True
    seeded_now = parse_instant(state.get("now", ""))
    return seeded_now is None or abs(now - seeded_now) > RESEED_AFTER


def seed(
    db: Database,
    service: FhirService,
    shared_dir: Path,
    sets: tuple[str, ...],
    now: datetime,
) -> SeedReport:
    """Replace all FHIR data with the base resources and the chosen data sets."""
    unknown = set(sets) - set(KNOWN_SETS)
    if unknown:
        raise ValueError(f"Unknown seed sets {sorted(unknown)}; known: {KNOWN_SETS}")
    for name in sets:
        folder = shared_dir / ("scenarios" if name == "scenarios" else "synthea")
        if not any(folder.glob("*.json")):
            raise FileNotFoundError(
                f"Seed set {name!r}: no FHIR bundles in {folder}. Point the sandbox at the "
                "shared folder that holds scenarios/ and synthea/."
            )
    started = time.perf_counter()
    stamp = datetime.now(UTC)
    items: list[dict] = base_resources()
    if "scenarios" in sets:
        items.extend(scenario_resources(shared_dir / "scenarios", now))
    if "synthea" in sets or "synthea-billing" in sets:
        items.extend(
            synthea_resources(shared_dir / "synthea", now, billing="synthea-billing" in sets)
        )
    prepared: dict[tuple[str, str], PreparedResource] = {}
    for resource in items:
        key = (resource["resourceType"], resource["id"])
        if key in prepared:  # Synthea shares Practitioners and Organizations across bundles
            continue
        patients = service.patients_of(None, key[0], resource)
        prepared[key] = service.prepare(key[0], key[1], resource, 1, stamp, patients)
    index_count = 0
    with db.write() as conn:
        for table in (search_index, history, resources):
            conn.execute(table.delete())
        batch: list[dict] = []
        index_batch: list[dict] = []
        for item in prepared.values():
            batch.append(item.row())
            index_batch.extend(item.index_dicts())
            if len(batch) >= _CHUNK:
                conn.execute(resources.insert(), batch)
                batch = []
            if len(index_batch) >= _CHUNK * 8:
                conn.execute(search_index.insert(), index_batch)
                index_count += len(index_batch)
                index_batch = []
        if batch:
            conn.execute(resources.insert(), batch)
        if index_batch:
            conn.execute(search_index.insert(), index_batch)
            index_count += len(index_batch)
        seconds = round(time.perf_counter() - started, 2)
        state = {
            "sets": list(sets),
            "base": BASE_VERSION,
            "now": format_instant(now),
            "seeded_at": format_instant(stamp),
            "resources": len(prepared),
            "seconds": seconds,
        }
        db.set_meta(conn, "seed", orjson.dumps(state).decode())
    seconds = round(time.perf_counter() - started, 2)
    log.info(
        "sandbox seeded %s: %d resources, %d index rows in %.2f s",
        ",".join(sets) or "base only",
        len(prepared),
        index_count,
        seconds,
    )
    return SeedReport(tuple(sets), len(prepared), index_count, seconds)
