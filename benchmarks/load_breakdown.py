"""Where Handoff's CPU per flow goes: the flows of `benchmarks/load.py` at one level, with
the CPU time of each of Handoff's steps counted in its workers (load_breakdown_conf).

    python benchmarks/load_breakdown.py [--level 16] [--flows 96] [--database-url URL]
        [--steps module:name,...]

Printed: Handoff's CPU per flow (every process, /proc, as load.py counts it), then each step's
CPU per flow, calls per flow, CPU per call and share of the whole, largest first. A step's
figure is the CPU of the threads that ran it (time.thread_time), its own and its callees':
steps nest (a view holds the service calls it makes), so the shares add up to more than
100%. The garbage collector's time is a step of its own. The last line is one JSON object.
Counting a step costs about a microsecond a call; the whole is measured as in load.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.load import WARM_UP, database, run_level  # noqa: E402
from benchmarks.load_stack import start_stack  # noqa: E402

#: The counting settings (importing them here would run Handoff's settings in this process).
CONF = "benchmarks.load_breakdown_conf"
#: What the workers are told: the steps, the file whose existence starts the counts, and the
#: folder each worker writes its counts to as it exits.
STEPS_ENV = "HANDOFF_BREAKDOWN_STEPS"
START_ENV = "HANDOFF_BREAKDOWN_START"
OUT_ENV = "HANDOFF_BREAKDOWN_OUT"

#: Handoff's steps in a flow, as `module:qualified.name` where callers look them up (a name
#: imported with `from ... import` is counted in the importing module).
STEPS = (
    # serving: gunicorn's handling of a connection's request, Flask's request, the views
    "gunicorn.workers.gthread:ThreadWorker.handle",
    "flask.app:Flask.wsgi_app",
    "flask.app:Flask.dispatch_request",
    "flask.ctx:RequestContext.push",
    "flask.app:Flask.finalize_request",
    "flask.templating:_render",
    # /launch
    "smartapp.launch.service:begin_authorization",
    "smartapp.launch.client:authorization_request",
    "smartapp.launch.store:remember_authorization",
    # /callback
    "smartapp.launch.service:complete_launch",
    "smartapp.launch.store:take_authorization",
    "smartapp.launch.service:_exchange",
    "smartapp.launch.service:_identity",
    "smartapp.launch.store:open_context",
    # the screen
    "smartapp.screen.service:find_visit",
    "smartapp.screen.service:present",
    "smartapp.screen.service:read_chart",
    "smartapp.screen.service:_side_reads",
    "smartapp.screen.service:build_shown",
    "smartapp.screen.service:evaluate",
    "smartapp.screen.service:readable_chart",
    "smartapp.screen.service:describe_evaluation",
    "smartapp.screen.service:record_shown",
    "smartapp.screen.views:unsigned_page",
    # Sign, the delivery beside it, the signed page
    "smartapp.screen.service:sign",
    "smartapp.screen.service:submit",
    "smartapp.writeback.outbox:deliver",
    "smartapp.writeback.outbox:_attempt",
    "smartapp.writeback.outbox:_record_attempt",
    "smartapp.screen.views:signed_page",
)


def measure(args: argparse.Namespace) -> dict:
    """Start the stack with the counting settings, warm it, run the level; the figures."""
    steps = args.steps.split(",") if args.steps else list(STEPS)
    with tempfile.TemporaryDirectory(prefix="handoff-breakdown-") as tmp:
        folder = Path(tmp)
        (folder / "counts").mkdir()
        start = folder / "start"
        env = {STEPS_ENV: ",".join(steps), START_ENV: str(start), OUT_ENV: str(folder / "counts")}
        with database(args.database_url, args.postgres, folder) as url:
            visits = WARM_UP + args.flows
            stack = start_stack(folder, url, visits, 2, 8, conf=CONF, extra_env=env)
            try:
                patients = stack.patients
                run_level(stack, 2, patients[:WARM_UP])
                start.touch()  # the workers count from here
                row = run_level(stack, args.level, patients[WARM_UP:])
            finally:
                stack.stop()  # each worker writes its counts as it exits
        return summed(row, folder / "counts", args.flows)


def summed(row: dict, counts: Path, flows: int) -> dict:
    """Each step's calls and CPU over every worker, per flow."""
    total: dict[str, list[float]] = {}
    missing: set[str] = set()
    for found in counts.glob("*.json"):
        data = json.loads(found.read_text())
        missing.update(data["missing"])
        for step, (calls, seconds) in data["counts"].items():
            into = total.setdefault(step, [0, 0.0])
            into[0] += calls
            into[1] += seconds
    whole = row["handoff_cpu_ms_per_flow"]
    steps = [
        {
            "step": step,
            "ms_per_flow": round(seconds * 1000 / flows, 2),
            "calls_per_flow": round(calls / flows, 2),
            "us_per_call": round(seconds * 1e6 / calls) if calls else None,
            "share": round(seconds * 1000 / flows / whole, 3) if whole else None,
        }
        for step, (calls, seconds) in total.items()
    ]
    steps.sort(key=lambda s: -s["ms_per_flow"])
    return {"load": row, "steps": steps, "missing": sorted(missing)}


def show(result: dict) -> None:
    row = result["load"]
    print(
        f"{row['concurrent']} concurrent, {row['flows']} flows, {row['errors']} errors: "
        f"Handoff {row['handoff_cpu_ms_per_flow']} ms of CPU per flow (every process)"
    )
    for s in result["steps"]:
        print(
            f"{s['ms_per_flow']:8.2f} ms/flow {100 * (s['share'] or 0):5.1f}% "
            f"{s['calls_per_flow']:6.2f} calls/flow {s['us_per_call'] or 0:7} us/call  {s['step']}"
        )
    for step in result["missing"]:
        print(f"(not in this tree: {step})")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, default=16, help="concurrent physicians")
    parser.add_argument("--flows", type=int, default=96, help="flows counted (after a warm-up)")
    parser.add_argument("--database-url", help="Handoff's database (default: a SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="$HANDOFF_TEST_POSTGRES_URL")
    parser.add_argument("--steps", help="module:name,... (default: STEPS)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    found = measure(parse(None))
    show(found)
    print(json.dumps(found))
