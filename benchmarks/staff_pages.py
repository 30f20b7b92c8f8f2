"""Staff pages on a large referral log beyond the two the scale benchmark times (issue 15:
staff pages at any log size): the auditor console's search by kind and by outcome (the tags
kept beside the log) and the coach supervisor's page (the handoff holdings kept beside the
log), each as the median of several views and as a ratio to a raw SELECT of one page of rows
measured in the same run.

    python benchmarks/staff_pages.py [--events 100000 1000000] [--repeat 5]

The logs are the scale benchmark's (`scale_log.cached`: generated through the app's own append
path once, then reused), copied for the run. The first view after the copy makes the tags and
the holdings from the whole log (printed apart, `*_build_s_*`, as `handoff db upgrade` would
do it). The supervisor page is timed twice: at the log's last event (its 14 days hold every
event of the generated log, which packs a health system's months into days) and 30 days later
(days with no event). The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, timedelta
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import scale_log  # noqa: E402
from scale import median_ms, raw_page  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from smartapp.audit.models import LogEvent  # noqa: E402
from smartapp.config import Defaults  # noqa: E402
from smartapp.db import Database  # noqa: E402
from smartapp.staff.console import tags  # noqa: E402
from smartapp.staff.console.search import Search, run_search  # noqa: E402
from smartapp.staff.supervisor import holdings, service  # noqa: E402

SEARCHES = {
    "kind": Search(kind="prc-consult"),
    "outcome": Search(outcome="accepted"),
    "kind_outcome": Search(kind="moud-buprenorphine", outcome="declined"),
}


def label(events: int) -> str:
    return f"{events // 1_000_000}m" if events >= 1_000_000 else f"{events // 1000}k"


def measure(events: int, repeat: int, folder: Path) -> dict:
    copy = folder / f"log-{events}.sqlite"
    shutil.copy(scale_log.cached(events), copy)
    db = Database(f"sqlite:///{copy}")
    db.migrate()
    size, figures = label(events), {}
    started = time.perf_counter()
    tags.bring_up_to_date(db)
    figures[f"console_tags_build_s_{size}"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    holdings.bring_up_to_date(db)
    figures[f"supervisor_holdings_build_s_{size}"] = round(time.perf_counter() - started, 1)
    floor = round(median_ms(lambda: raw_page(db), repeat), 1)
    figures[f"raw_page_ms_{size}"] = floor

    def search(wanted: Search) -> None:
        with db.session() as session:
            run_search(session, wanted, 50)

    for name, wanted in SEARCHES.items():
        took = round(median_ms(partial(search, wanted), repeat), 1)
        figures[f"console_{name}_search_ms_{size}"] = took
        figures[f"console_{name}_search_to_floor_{size}"] = round(took / floor, 1)
    config = {k: getattr(Defaults, k) for k in dir(Defaults) if k.isupper()}
    with db.session() as session:
        last = session.scalar(select(func.max(LogEvent.at)))
    assert last is not None
    last = last if last.tzinfo else last.replace(tzinfo=UTC)
    for name, now in (("full", last), ("quiet", last + timedelta(days=30))):
        view = partial(service.supervisor_page, db, config, None, now)
        took = round(median_ms(view, repeat), 1)
        figures[f"supervisor_{name}_ms_{size}"] = took
        figures[f"supervisor_{name}_to_floor_{size}"] = round(took / floor, 1)
    db.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="handoff-staff-pages-") as folder:
        for events in args.events:
            found = measure(events, args.repeat, Path(folder))
            for key, value in found.items():
                print(f"{key}: {value}", flush=True)
            figures |= found
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
