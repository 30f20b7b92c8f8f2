"""What an append costs: `python -m tests.audit.bench_append [POSTGRES_URL]`.

Each measured unit of work is what a page view does: open a session, append one event, commit.
Compared with the same unit of work inserting an unchained row into a plain table, so the
number printed as "chain overhead" is what the hash chain, the lock and the checkpoints add.
Not collected by pytest (no test_ prefix)."""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, text
from sqlalchemy.engine import make_url

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.audit.signing import load_signer
from smartapp.db import Database

N = 1000
DATA = {
    "pack": {"id": "default", "version": "1"},
    "suggestions": [
        {
            "kind": "prc-consult",
            "variant": None,
            "cautions": [],
            "rule": "r1",
            "evidence": ["Condition/P01-cond1", "Observation/P01-cows"],
        }
    ],
}
plain = Table(
    "bench_plain",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("payload", String(2000)),
)


def measure(db: Database, n: int = N) -> tuple[list[float], list[float]]:
    plain.create(db.engine, checkfirst=True)
    chained, baseline = [], []
    for i in range(n):
        started = time.perf_counter()
        with db.session() as session:
            referral_log.append(
                session,
                "suggestions-shown",
                user_ref="Practitioner/dr-1",
                iss="https://ehr.example.org/fhir",
                patient_id="P01-pt",
                encounter_id="P01-enc",
                data=DATA,
            )
        chained.append(time.perf_counter() - started)
        started = time.perf_counter()
        with db.session() as session:
            session.execute(insert(plain).values(payload=f"{i} {DATA}"))
        baseline.append(time.perf_counter() - started)
    return chained, baseline


def report(name: str, chained: list[float], baseline: list[float]) -> None:
    def ms(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000

    mean_c, mean_b = statistics.mean(chained) * 1000, statistics.mean(baseline) * 1000
    print(
        f"{name}: append mean {mean_c:.3f} ms (p50 {ms(chained, 50):.3f}, "
        f"p99 {ms(chained, 99):.3f}); plain insert mean {mean_b:.3f} ms; "
        f"chain overhead {mean_c - mean_b:.3f} ms"
    )


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    signer = load_signer(folder / "key.pem")
    db = Database(f"sqlite:///{folder / 'bench.sqlite'}")
    db.create_all()
    chain.configure(db, signer=signer, every=100)
    report("SQLite file (WAL)", *measure(db))
    if len(sys.argv) > 1:
        schema = f"handoff_bench_{secrets.token_hex(4)}"
        admin = create_engine(sys.argv[1])
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(sys.argv[1]).update_query_dict({"options": f"-csearch_path={schema}"})
            pg = Database(url.render_as_string(hide_password=False))
            pg.create_all()
            chain.configure(pg, signer=signer, every=100)
            report("PostgreSQL (localhost)", *measure(pg))
            pg.engine.dispose()
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
