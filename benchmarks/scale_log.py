"""A large referral log for benchmarks/scale.py, written through the app's own append path.

`generate(url, events)` appends a seeded mix of ED flows (launch, suggestions shown, decision,
write attempt, coach and lifecycle steps, follow-ups, audit reads; about half of the launches
suggest nothing, as in a real ED) with `smartapp.audit.log.append`: the chain code links and
hashes every event and signs a checkpoint every 100 (one flush per 100 events, one commit per
2,000: batched units of work, the real chain). The chain's clock is advanced a few seconds per
event so that the log spans months of ISO weeks.

`cached(events, dialect)` keeps the generated SQLite file under the temp folder, keyed by the
log format's version (a hash of the chain, canonical form, migrations and this generator), so
a second run reuses it. PostgreSQL gets a copy of the same rows (same hashes, same chain) in a
schema of its own, created by the caller and dropped after.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.signing import Signer, load_signer
from smartapp.db import Database

REPO = Path(__file__).resolve().parents[1]
ISS = "https://ehr.example.org/fhir"
START = datetime(2024, 1, 1, tzinfo=UTC)
KINDS = ("prc-consult", "moud-buprenorphine", "naloxone-kit", "moud-continue")
RULES = {k: f"{k}-rule" for k in KINDS}
REASONS = ("Patient declined", "Already in treatment elsewhere", "Clinically inappropriate now")
PROGRAMS = ("Bridge Clinic", "Harbor Recovery", "Eastside MOUD Program", "Hope Peer Network")
STEPS = ("contacted", "appointment-scheduled", "appointment-attended", "engaged-30-days")
RACES = ("White", "White", "Black or African American", "Asian", None)
PACK = {"id": "handoff-default", "version": "1.0.0", "hash": "sha256:abc"}


GENERATOR = "1"  # bump when the mix of events below changes


def version() -> str:
    """The log format's version (the chain and its canonical form) and the generator's: what
    a cached file depends on. The schema is brought to head on each working copy."""
    digest = hashlib.sha256(GENERATOR.encode())
    for path in (REPO / "smartapp/audit/chain.py", REPO / "smartapp/audit/canonical.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def folder() -> Path:
    path = Path(tempfile.gettempdir()) / "handoff-scale" / version()
    path.mkdir(parents=True, exist_ok=True)
    return path


def signer(events: int) -> Signer:
    """The key the log of `events` events was signed with (kept beside it)."""
    return load_signer(folder() / f"log-{events}.key.pem")


class Clock:
    """The chain's clock while generating: a few seconds per event."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=7)
        return self.now


def _flow(rng: random.Random, n: int) -> Iterator[tuple[str, dict, dict]]:
    """The events of one launch: (type, columns, data)."""
    patient = f"pat-{rng.randrange(n // 3 + 1):07d}"
    who = {
        "iss": ISS,
        "patient_id": patient,
        "encounter_id": f"enc-{n:08d}",
        "user_ref": f"Practitioner/dr-{rng.randrange(40)}",
    }
    yield "launch", who, {"scope": "launch openid", "registration": "epic"}
    if rng.random() < 0.5:
        yield "suggestions-shown", who, {"pack": PACK, "suggestions": [], "demographics": {}}
        return
    kinds = ["prc-consult"] + [k for k in KINDS[1:] if rng.random() < 0.4]
    arrival = f"2024-01-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"
    demographics = {
        "race": rng.choice(RACES),
        "ethnicity": rng.choice(("Not Hispanic or Latino", "Hispanic or Latino", None)),
        "sex": rng.choice(("female", "male", "unknown")),
        "age_group": rng.choice(("18-24", "25-34", "35-44", "45-54", "65+")),
    }
    shown = {
        "pack": PACK,
        "demographics": demographics,
        "encounter_start": arrival,
        "suggestions": [
            {"kind": k, "variant": None, "cautions": [], "rule": RULES[k], "evidence": []}
            for k in kinds
        ],
    }
    yield "suggestions-shown", who, shown
    if rng.random() < 0.08:
        return
    referral = f"ref-{n:08d}"
    decisions = [
        {"kind": k, "accepted": rng.random() < 0.7, "reason": None, "text": None} for k in kinds
    ]
    for d in decisions:
        if not d["accepted"]:
            d["reason"] = rng.choice(REASONS)
    yield "decision", who, {"referral": referral, "pack": PACK, "decisions": decisions}
    yield "write-attempt", who, {"referral": referral, "attempt": 1, "outcome": "written"}
    if not decisions[0]["accepted"]:
        return
    coach = who | {"user_ref": "Practitioner/coach-1"}
    yield "coach-accept", coach, {"referral": referral, "task_status": "accepted"}
    if rng.random() < 0.8:
        yield "coach-contact", coach, {"referral": referral, "task_status": "in-progress"}
        for step in STEPS[: rng.randrange(len(STEPS) + 1)]:
            partner = rng.random() < 0.5
            yield (
                "handoff-status",
                who | {"user_ref": "Organization/bridge" if partner else "Practitioner/coach-1"},
                {
                    "referral": referral,
                    "business_status": step,
                    "actor_kind": "partner" if partner else "coach",
                    "program": rng.choice(PROGRAMS),
                    "partner": "bridge" if partner else None,
                },
            )
        if rng.random() < 0.5:
            yield "coach-link", coach, {"referral": referral, "program": rng.choice(PROGRAMS)}
    if rng.random() < 0.3:
        yield (
            "followup-outcome",
            coach,
            {"referral": referral, "day": 30, "outcome": rng.choice(("in-treatment", "lost"))},
        )


def _events(seed: int) -> Iterator[tuple[str, dict, dict]]:
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        yield from _flow(rng, n)
        if n % 10 == 0:
            yield "audit-read", {"user_ref": "urn:staff:auditor"}, {"query": "log search, page 1"}


def generate(db: Database, events: int, seed: int = 15, sign: bool = True) -> None:
    """Append `events` events through `referral_log.append` (batched units of work); `sign`:
    with this log's own key (else the chain's configuration stands)."""
    if sign:
        chain.configure(db, signer=signer(events), every=100)
    clock, saved = Clock(), chain.utcnow
    chain.utcnow = clock  # type: ignore[assignment]
    try:
        stream = _events(seed)
        done = 0
        while done < events:
            batch = min(2000, events - done)
            with db.session() as session:
                for i in range(batch):
                    type_, columns, data = next(stream)
                    referral_log.append(session, type_, **columns, data=data)
                    if i % 100 == 99:
                        session.flush()
                        session.expunge_all()
            done += batch
    finally:
        chain.utcnow = saved  # type: ignore[assignment]


def cached(events: int) -> Path:
    """The SQLite file of a generated log of `events` events (generated once per version)."""
    path = folder() / f"log-{events}.sqlite"
    if not path.exists():
        work = path.with_suffix(".partial")
        for leftover in work.parent.glob(work.name + "*"):
            leftover.unlink()
        db = Database(f"sqlite:///{work}")
        db.create_all()
        generate(db, events)
        with db.engine.begin() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        db.engine.dispose()
        shutil.move(work, path)
    return path


def copy_to(source: Database, target: Database) -> None:
    """The same log rows (same hashes, same chain) into another database, in chunks."""
    for table in (LogEvent.__table__, LogCheckpoint.__table__):
        with source.engine.connect() as reading, target.engine.begin() as writing:
            rows = reading.execution_options(yield_per=5000).execute(select(table))
            for chunk in rows.partitions():
                writing.execute(insert(table), [dict(r._mapping) for r in chunk])


def drop_schema(admin_url: str, schema: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(admin_url)
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
