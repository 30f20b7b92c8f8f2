"""The referral log at scale (issue 15): the auditor console, the program dashboard, `audit
verify` and `audit export` on logs of 100k and 1M events, each against a floor measured in the
same run, on SQLite and on PostgreSQL.

    python benchmarks/scale.py [--events N ...] [--postgres URL | --no-postgres] [--no-sqlite]
        [--repeat R] [--only verify export console dashboard memory]

The logs are generated through the app's own append path (`scale_log`: batched units of work,
the real chain code, a checkpoint every 100 events) and cached under the temp folder, keyed
by the log format's version; the first 1M run takes several minutes. PostgreSQL gets a copy of
the same rows in a schema of its own, created and dropped here.

Figures (one function each; the last line printed is one JSON object with every key made):
- console page: the events page's work (one page of the newest events with their count, the
  filter's choices and user names; the chain verified from the last verified head after 20 new
  events; the page view itself logged), median ms; floor: a raw SELECT of one page of rows.
- dashboard: the dashboard page's work (kept visits brought up to date, every figure, the view
  logged), median ms; floor: the same raw SELECT of one page. The first view, which builds the
  kept visits from the whole log, is printed apart (`dashboard_build_s_*`).
- verify: `verify` as `handoff audit verify` runs it (the generated log has no referral
  tables, so without the cross-check against them); floor: every row
  read (server-side cursor) and SHA-256 over its columns' text.
- export: `handoff audit export`'s work as NDJSON and as CSV to a file, by every core (up to
  4, fewer for a small log: `export_jobs_*` is how many processes made it) as the command
  runs it (`export_jobs`), and NDJSON in one process
  (`export_ndjson_one_process_*`); floor: every row read and written as one tab-separated
  line, in one process; each of up to
  `--repeat` (at most 3) runs times the floor and the exports back to back, each to a new file,
  the medians printed. `export_ndjson_cpu_to_floor_cpu_*`: the NDJSON export's CPU time (every
  process) to the floor's. `export_ndjson_bytes_s_*`: writing the NDJSON export's bytes alone
  (a copy of its file; about 6 times the floor's bytes).
- memory: Python's peak allocation (tracemalloc) during verify and each export, per size.

Keys for the issue: `console_page_ms_1m`, `dashboard_ms_1m` (SQLite), `verify_to_floor` and
`export_to_floor` (the worst over sizes, formats and databases measured, of the export as the
command runs it); `backtest_to_parse`
and `spark_visits_per_s_100k` from `population.figures` (`--patients`: the backtest of 10k and
100k patients on both engines, see benchmarks/population.py); `load_errors_64` and
`handoff_cpu_ms_per_flow` from `load.scale_keys` (whole physician flows at 1 to 64 concurrent,
see benchmarks/load.py; `--no-load`: skip), run on SQLite and on PostgreSQL (as the other
figures: `--no-sqlite`, `--no-postgres`), each key the worse of the two; each database's
figures are printed beside (`*_sqlite`, `*_postgresql`), with the floor of the level of 64
and the ratio to it (`handoff_cpu_floor_ms_*`, `handoff_cpu_to_floor_*`). Other helpers may
add their figures as further functions; keys not measured here are left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import scale_log  # noqa: E402
from sqlalchemy import create_engine, make_url, text  # noqa: E402

from smartapp.audit import chain, fastrows  # noqa: E402
from smartapp.audit import log as referral_log  # noqa: E402
from smartapp.audit import rows as stored  # noqa: E402
from smartapp.audit.export import write_export_of  # noqa: E402
from smartapp.audit.export_jobs import default_jobs, workers_for  # noqa: E402
from smartapp.audit.models import LogEvent  # noqa: E402
from smartapp.audit.verify import verify  # noqa: E402
from smartapp.db import Database  # noqa: E402
from smartapp.staff.console.chain_status import chain_status  # noqa: E402
from smartapp.staff.console.events import search_page  # noqa: E402
from smartapp.staff.console.search import PAGE_SIZE, Search  # noqa: E402
from smartapp.staff.dashboard.service import bring_up_to_date, program_dashboard  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
JOBS = default_jobs()  # `handoff audit export --jobs`' default: every core, up to 4
AUDITOR = "urn:staff:bench-auditor"


@dataclass
class Bench:
    """One log to measure: its database, what it is, the public key and a cleanup."""

    db: Database
    label: str  # e.g. "sqlite_1m"
    events: int
    keys: list
    cleanup: Callable[[], None]


def size_label(events: int) -> str:
    if events % 1_000_000 == 0:
        return f"{events // 1_000_000}m"
    if events % 1000 == 0:
        return f"{events // 1000}k"
    return str(events)


def sqlite_bench(events: int, work: Path) -> Bench:
    """A working copy of the cached log (the views write their summaries into it)."""
    source = scale_log.cached(events)
    target = work / f"sqlite-{events}.sqlite"
    shutil.copyfile(source, target)
    db = Database(f"sqlite:///{target}")
    db.migrate()
    chain.configure(db, signer=scale_log.signer(events), every=100)
    return Bench(
        db,
        f"sqlite_{size_label(events)}",
        events,
        [scale_log.signer(events).public_key],
        db.engine.dispose,
    )


def postgres_bench(events: int, admin_url: str) -> Bench:
    """The same rows in a schema made for this run (dropped by `cleanup`)."""
    schema = f"handoff_scale_{secrets.token_hex(4)}"
    admin = create_engine(admin_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    db = Database(url.render_as_string(hide_password=False))

    def cleanup() -> None:
        db.engine.dispose()
        scale_log.drop_schema(admin_url, schema)

    try:
        db.migrate()
        source = Database(f"sqlite:///{scale_log.cached(events)}")
        scale_log.copy_to(source, db)
        source.engine.dispose()
        with db.engine.begin() as connection:
            connection.execute(text("ANALYZE"))
        chain.configure(db, signer=scale_log.signer(events), every=100)
    except BaseException:
        cleanup()
        raise
    return Bench(
        db,
        f"postgresql_{size_label(events)}",
        events,
        [scale_log.signer(events).public_key],
        cleanup,
    )


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# -- floors ------------------------------------------------------------------------------------


def raw_page(db: Database) -> None:
    """The floor of a page: one page of the newest rows, raw."""
    query = stored.select_events().order_by(LogEvent.seq.desc()).limit(PAGE_SIZE)
    with db.engine.connect() as connection:
        connection.execute(query).all()


def read_and_hash(db: Database) -> None:
    """The floor of verify: every row read, SHA-256 over its columns."""
    with db.engine.connect() as connection:
        query = fastrows.query(connection.dialect.name)
        for row in fastrows.stream(connection, query):
            hashlib.sha256("\x1f".join(map(str, row)).encode()).hexdigest()


def read_and_write(db: Database, path: Path) -> None:
    """The floor of export: every row read and written as one line."""
    with db.engine.connect() as connection, path.open("w", encoding="utf-8") as out:
        query = fastrows.query(connection.dialect.name)
        for row in fastrows.stream(connection, query):
            out.write("\t".join(map(str, row)) + "\n")


# -- the work measured -------------------------------------------------------------------------


def append_some(db: Database, count: int) -> None:
    """New events since the last view (a physician's launch, say)."""
    with db.session() as session:
        for n in range(count):
            referral_log.append(
                session,
                "launch",
                user_ref="Practitioner/dr-bench",
                iss=scale_log.ISS,
                patient_id=f"pat-bench-{n}",
                data={"registration": "epic"},
            )


def console_view(bench: Bench, full: bool = False) -> None:
    """What /console/events does for the first page of all events."""
    with bench.db.session() as session:
        verified = chain_status(session, bench.keys, 100, None, full=full)
        search_page(session, Search(), PAGE_SIZE, verified.report)
        referral_log.record_read(session, AUDITOR, "log search (all events), page 1")


def dashboard_view(bench: Bench) -> dict:
    """What /console/dashboard does for all time."""
    bring_up_to_date(bench.db)
    with bench.db.session() as session:
        shown = program_dashboard(
            session,
            start=None,
            end=None,
            min_cell=5,
            programs=scale_log.PROGRAMS,
        )
        referral_log.record_read(session, AUDITOR, "program dashboard (all time)")
    return shown.figures


def run_verify(bench: Bench) -> None:
    with bench.db.session() as session:
        report = verify(session, bench.keys, 100)  # the chain; no referral tables here
    assert report.ok, report.summary()


def run_export(bench: Bench, fmt: str, path: Path, jobs: int = 1) -> None:
    """`handoff audit export`'s work: in this process alone, or by `jobs` worker processes."""
    with path.open("w", encoding="utf-8", newline="") as out:
        result = write_export_of(bench.db, out, fmt, None, None, jobs=jobs)
    assert result.events >= bench.events


# -- figures -----------------------------------------------------------------------------------


def figure_console(bench: Bench, repeat: int) -> dict:
    """The events page after new events, verified from the last verified head; its floor."""
    full = seconds(lambda: console_view(bench, full=True))
    views = []
    for _ in range(repeat):
        append_some(bench.db, 20)
        views.append(median_ms(lambda: console_view(bench), 1))
    page = statistics.median(views)
    floor = median_ms(lambda: raw_page(bench.db), max(repeat, 10))
    return {
        f"console_page_ms_{bench.label}": round(page, 1),
        f"console_page_floor_ms_{bench.label}": round(floor, 2),
        f"console_page_to_floor_{bench.label}": round(page / floor, 1),
        f"console_full_verify_s_{bench.label}": round(full, 2),
    }


def figure_dashboard(bench: Bench, repeat: int) -> dict:
    """The dashboard page with its visits up to date (the build timed apart); its floor."""
    build = seconds(lambda: bring_up_to_date(bench.db))
    page = median_ms(lambda: dashboard_view(bench), repeat)
    floor = median_ms(lambda: raw_page(bench.db), max(repeat, 10))
    return {
        f"dashboard_ms_{bench.label}": round(page, 1),
        f"dashboard_to_floor_{bench.label}": round(page / floor, 1),
        f"dashboard_build_s_{bench.label}": round(build, 2),
    }


def figure_verify(bench: Bench) -> dict:
    floor = seconds(lambda: read_and_hash(bench.db))
    took = seconds(lambda: run_verify(bench))
    return {
        f"verify_s_{bench.label}": round(took, 2),
        f"verify_floor_s_{bench.label}": round(floor, 2),
        f"verify_to_floor_{bench.label}": round(took / floor, 2),
    }


def remove(path: Path) -> None:
    """The last run's file removed before a run is timed: each run times its own writing, not
    the kernel freeing the previous run's file (opening a file of a hundred megabytes for
    writing truncates it: about 0.5 s at 100k events, charged to whichever run came next)."""
    path.unlink(missing_ok=True)


#: The exports timed: (name, format, worker processes). `handoff audit export` uses every
#: core, up to 4 (`ndjson`, `csv`: the issue's figures); `ndjson_one_process` is the same
#: export made in this process alone, printed beside them.
EXPORTS = (
    ("ndjson", "ndjson", JOBS),
    ("csv", "csv", JOBS),
    ("ndjson_one_process", "ndjson", 1),
)


def figure_export(bench: Bench, work: Path, repeat: int) -> dict:
    """Each run times the floor and the exports back to back (on a shared machine a ratio is
    of times taken together); the medians of up to 3 runs. Also the time to write the NDJSON
    export's bytes alone (a copy of its file): the share of its volume (about 6 times the
    floor's), and the CPU time of the NDJSON export (every process) to the floor's."""
    path, copy = work / "export.out", work / "export.copy"
    floors: list[float] = []
    took: dict[str, list[float]] = {name: [] for name, _, _ in EXPORTS}
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in EXPORTS}
    cpu_ratios: list[float] = []
    write_only = None
    for _ in range(max(1, min(repeat, 3))):
        remove(path)
        floor_cpu = cpu_seconds()
        floor = seconds(lambda: read_and_write(bench.db, path))
        floor_cpu = cpu_seconds() - floor_cpu
        floors.append(floor)
        for name, fmt, jobs in EXPORTS:
            remove(path)
            used = cpu_seconds()
            took[name].append(seconds(lambda f=fmt, j=jobs: run_export(bench, f, path, j)))
            ratios[name].append(took[name][-1] / floor)
            if name == "ndjson":
                cpu_ratios.append((cpu_seconds() - used) / floor_cpu)
            if name == "ndjson" and write_only is None:
                write_only = seconds(lambda: shutil.copyfile(path, copy))
                copy.unlink()
    path.unlink(missing_ok=True)
    found = {
        f"export_floor_s_{bench.label}": round(statistics.median(floors), 2),
        f"export_ndjson_bytes_s_{bench.label}": round(write_only or 0.0, 2),
        f"export_jobs_{bench.label}": workers_for(bench.events, JOBS),
        f"export_ndjson_cpu_to_floor_cpu_{bench.label}": round(statistics.median(cpu_ratios), 2),
    }
    for name, _, _ in EXPORTS:
        found[f"export_{name}_s_{bench.label}"] = round(statistics.median(took[name]), 2)
        found[f"export_{name}_to_floor_{bench.label}"] = round(statistics.median(ratios[name]), 2)
    return found


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the export's workers)."""
    used = os.times()
    return used.user + used.system + used.children_user + used.children_system


def figure_memory(bench: Bench, work: Path) -> dict:
    """Peak Python allocation (MB) during verify and each export."""
    found = {}
    path = work / "export.out"
    for name, run in (
        ("verify", lambda: run_verify(bench)),
        ("export_ndjson", lambda: run_export(bench, "ndjson", path)),
        ("export_csv", lambda: run_export(bench, "csv", path)),
    ):
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        found[f"{name}_peak_mb_{bench.label}"] = round(peak / 2**20, 1)
    path.unlink(missing_ok=True)
    return found


FIGURES = ("verify", "export", "console", "dashboard", "memory")


def measure(bench: Bench, work: Path, repeat: int, only: tuple[str, ...] = FIGURES) -> dict:
    found: dict[str, Any] = {}
    figures = {
        "verify": lambda: figure_verify(bench),
        "export": lambda: figure_export(bench, work, repeat),
        "console": lambda: figure_console(bench, repeat),
        "dashboard": lambda: figure_dashboard(bench, repeat),
        "memory": lambda: figure_memory(bench, work),
    }
    for name in only:
        result = figures[name]()
        print(json.dumps(result), flush=True)
        found |= result
    return found


def issue_keys(found: dict) -> dict:
    """The issue's keys, from what was measured (left out where not measured)."""
    keys: dict[str, Any] = {}
    for key in ("console_page_ms", "dashboard_ms"):
        if f"{key}_sqlite_1m" in found:
            keys[f"{key}_1m"] = found[f"{key}_sqlite_1m"]
    verify = [v for k, v in found.items() if k.startswith("verify_to_floor_")]
    export = [
        v for k, v in found.items() if re.match(r"export_(ndjson|csv)_to_floor_", k)
    ]  # `handoff audit export` as it runs (its default jobs); the one-process figures beside
    if verify:
        keys["verify_to_floor"] = max(verify)
    if export:
        keys["export_to_floor"] = max(export)
    for key in ("backtest_to_parse", "spark_visits_per_s_100k"):  # benchmarks/population.py
        if key in found:
            keys[key] = found[key]
    # benchmarks/load.py: the worst of the databases measured (the issue's figure holds for
    # SQLite and PostgreSQL), each database's figures beside under their own keys
    for key in ("load_errors_64", "handoff_cpu_ms_per_flow"):
        measured = [found[f"{key}{db}"] for db in LOAD_DATABASES if f"{key}{db}" in found]
        if measured:  # None: a run whose top level was not 64
            keys[key] = None if None in measured else max(measured)
    return keys


#: The suffixes of the load benchmark's keys, one per database it ran on.
LOAD_DATABASES = ("_sqlite", "_postgresql")


def suffixed(figures: dict, suffix: str) -> dict:
    """`figures` with `suffix` added to every key (one database's load figures)."""
    return {f"{key}{suffix}": value for key, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--postgres", default=os.environ.get("HANDOFF_TEST_POSTGRES_URL") or POSTGRES
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES))
    parser.add_argument(
        "--patients", type=int, nargs="*", default=[10_000, 100_000],
        help="backtest populations, patients (benchmarks/population.py); no size: skip",
    )  # fmt: skip
    parser.add_argument("--no-load", action="store_true", help="skip benchmarks/load.py")
    args = parser.parse_args()
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="handoff-scale-") as folder:
        work = Path(folder)
        for events in args.events:
            makers = [] if args.no_sqlite else [lambda e=events: sqlite_bench(e, work)]
            if not args.no_postgres:
                makers.append(lambda e=events: postgres_bench(e, args.postgres))
            for make in makers:
                bench = make()
                try:
                    found |= measure(bench, work, args.repeat, tuple(args.only))
                finally:
                    bench.cleanup()
                    for leftover in work.glob("sqlite-*"):
                        leftover.unlink()
    if args.patients:
        import population  # the backtest at population scale, both engines

        rows = population.figures(tuple(args.patients))
        print(json.dumps(rows.pop("population")), flush=True)
        found |= rows
    if not args.no_load:
        import load  # whole physician flows under load (its table printed on the way)

        # its own defaults, not scale.py's command line; on each database measured above
        if not args.no_sqlite:
            found |= suffixed(load.scale_keys([]), "_sqlite")
        if not args.no_postgres:
            found |= suffixed(load.scale_keys(["--database-url", args.postgres]), "_postgresql")
    print(json.dumps(found | issue_keys(found)))


if __name__ == "__main__":
    main()
