"""Handoff's CPU per flow, this tree against another revision, in paired rounds.

    python benchmarks/load_ab.py REV [--rounds 5] [--postgres] [--levels 64] [--full]

The machine's speed drifts by more than a change to Handoff moves its CPU per flow (on the
2-core machine of December 2026: about 5 ms a flow within a day, against changes of 0.5-2 ms),
so two runs of `benchmarks/load.py` taken apart compare the machine, not the code. This runs
load.py from REV (checked out in a temporary git worktree) and from this tree one after the
other, round by round, the order alternating (drift within a round falls on each side alike),
and prints each round's pair, the differences (this tree minus REV) and their median. Each
side serves its own code (load.py puts its tree first on the servers' PYTHONPATH). The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.load_stack import SCENARIOS  # noqa: E402

KEY = "handoff_cpu_ms_per_flow"
#: The shared data load.py reads here; a worktree elsewhere is told where it is.
SHARED_ENV = "HANDOFF_SHARED_DIR"
SHARED = str(SCENARIOS.parent)


def load_run(tree: Path, load_args: Sequence[str]) -> dict:
    """One run of `tree`'s benchmarks/load.py: its last line (the JSON object)."""
    done = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / "load.py"), *load_args],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {SHARED_ENV: SHARED},
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"load.py in {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def summary(pairs: Sequence[tuple[float, float]]) -> dict:
    """(REV's figure, this tree's) per round: the differences, their median and mean, and
    how many rounds this tree was lower."""
    differences = [round(head - base, 2) for base, head in pairs]
    return {
        "rounds": len(pairs),
        "base": [base for base, _ in pairs],
        "head": [head for _, head in pairs],
        "differences": differences,
        "median_difference": round(statistics.median(differences), 2),
        "mean_difference": round(statistics.fmean(differences), 2),
        "head_lower": sum(1 for d in differences if d < 0),
    }


def compare(rev: str, rounds: int, load_args: Sequence[str]) -> dict:
    """Paired rounds of REV's load.py (checked out in a temporary worktree) and this tree's."""
    with tempfile.TemporaryDirectory(prefix="handoff-load-ab-") as folder:
        base = Path(folder) / "base"
        git = ["git", "-C", str(REPO)]
        subprocess.run([*git, "worktree", "add", "--detach", str(base), rev], check=True)
        try:
            return compare_trees(base, rev, rounds, load_args)
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(base)], check=False)


def compare_trees(base: Path, label: str, rounds: int, load_args: Sequence[str]) -> dict:
    """Paired rounds of `base`'s load.py and this tree's, the order alternating, after a
    short run of each; the summary of their figures (`label` names `base` where printed)."""
    for tree in (base, REPO):  # not counted: a fresh worktree compiles its modules first
        load_run(tree, ["--levels", "1", "--quick"])
    pairs = []
    for number in range(rounds):
        order = [("base", base), ("head", REPO)]
        if number % 2:
            order.reverse()
        found = {side: load_run(tree, load_args)[KEY] for side, tree in order}
        pairs.append((found["base"], found["head"]))
        print(
            f"round {number + 1}: {label} {found['base']} ms, this tree {found['head']} ms "
            f"({found['head'] - found['base']:+.1f})",
            flush=True,
        )
    return {"rev": label, "key": KEY} | summary(pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare with (a commit, a branch, HEAD~1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="$HANDOFF_TEST_POSTGRES_URL")
    parser.add_argument("--levels", default="64", help="load.py's levels (the highest is compared)")
    parser.add_argument("--full", action="store_true", help="load.py's full flow counts")
    args = parser.parse_args(argv)
    load_args = ["--levels", args.levels] + ([] if args.full else ["--quick"])
    if args.postgres:
        load_args.append("--postgres")
    print(json.dumps(compare(args.rev, args.rounds, load_args)))


if __name__ == "__main__":
    main()
