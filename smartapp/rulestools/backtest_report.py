"""The backtest's ``--json`` report (documented in ``rules/README.md``): counts per pack at the
replay time, by year and during the visits, the differences between two packs, and each
visit."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from smartapp.engine import Pack
from smartapp.engine.history import (
    Moment,
    Outcome,
    difference,
    first_difference,
    first_suggested,
)

if TYPE_CHECKING:
    from smartapp.rulestools.backtest import Backtest


def _kind_counts(pack: Pack) -> dict[str, dict[str, Any]]:
    """Zeroed counts for every kind of a pack, with its declared variants and cautions."""
    return {
        rule.kind: {
            "visits": 0,
            "variants": {v.name: 0 for v in rule.variants or ()},
            "cautions": {name: 0 for name in rule.cautions},
        }
        for rule in pack.rules
    }


def _add(counts: dict[str, dict[str, Any]], suggestions: Iterable[Any]) -> None:
    for s in suggestions:
        kind = counts.setdefault(s.kind, {"visits": 0, "variants": {}, "cautions": {}})
        kind["visits"] += 1
        if s.variant is not None:
            kind["variants"][s.variant] = kind["variants"].get(s.variant, 0) + 1
        for caution in s.cautions:
            kind["cautions"][caution] = kind["cautions"].get(caution, 0) + 1


def _during_counts(pack: Pack, timelines: Iterable[Sequence[Moment]]) -> dict[str, Any]:
    """Visits with each kind suggested at any moment of the visit (with every variant and
    caution it had at some moment)."""
    counts = _kind_counts(pack)
    with_any = 0
    for timeline in timelines:
        seen: dict[str, Any] = {}
        for moment in timeline:
            for s in moment.outcome.suggested:
                variants, cautions = seen.setdefault(s.kind, (set(), set()))
                if s.variant is not None:
                    variants.add(s.variant)
                cautions.update(s.cautions)
        with_any += bool(seen)
        for kind, (variants, cautions) in seen.items():
            found = counts.setdefault(kind, {"visits": 0, "variants": {}, "cautions": {}})
            found["visits"] += 1
            for name in variants:
                found["variants"][name] = found["variants"].get(name, 0) + 1
            for name in cautions:
                found["cautions"][name] = found["cautions"].get(name, 0) + 1
    return {"visits_with_suggestions": with_any, "counts": counts}


def pack_report(result: Backtest, index: int) -> dict[str, Any]:
    """Counts of one pack at the replay time (overall and by year), and during the visits."""
    pack = result.packs[index]
    overall = _kind_counts(pack)
    by_year: dict[str, dict[str, Any]] = {}
    with_any = 0
    for replayed in result.visits:
        found = replayed.results[index]
        name = str(replayed.visit.time.year)
        year = by_year.get(name)
        if year is None:  # zeroed counts made once a year, not once a visit
            year = by_year[name] = {"visits_with_suggestions": 0, "counts": _kind_counts(pack)}
        _add(overall, found)
        _add(year["counts"], found)
        if found:
            with_any += 1
            year["visits_with_suggestions"] += 1
    return {
        "id": pack.id,
        "version": pack.version,
        "hash": f"sha256:{pack.content_hash}",
        "path": str(pack.path) if pack.path else None,
        "visits_with_suggestions": with_any,
        "counts": overall,
        "by_year": dict(sorted(by_year.items())),
        "during": _during_counts(pack, (r.timelines[index] for r in result.visits)),
    }


def differences(result: Backtest) -> list[dict[str, Any]]:
    """Visits where the compared pack's outcome (suggestions, variants, cautions, evidence
    or withheld reasons) differs from the base pack's at some moment, with the first such
    moment and the difference then."""
    out = []
    for replayed in result.visits:
        found = first_difference(replayed.timelines[0], replayed.timelines[1])
        if found is None:
            continue
        moment, before, after = found
        diff = difference(before.suggested, after.suggested)
        out.append(
            {
                "visit": replayed.visit.id,
                "patient": replayed.patient,
                "time": replayed.visit.time.isoformat(),
                "moment": moment.isoformat(),
                "added": [s.to_json() for s in diff.added],
                "removed": [s.to_json() for s in diff.removed],
                "changed": [
                    {"kind": a.kind, "before": a.to_json(), "after": b.to_json()}
                    for a, b in diff.changed
                ],
                "withheld": withheld_difference(before, after),
            }
        )
    return out


def withheld_difference(before: Outcome, after: Outcome) -> list[dict[str, Any]]:
    """Kinds whose withheld reasons differ: ``{"kind", "before", "after"}`` (reason lists,
    empty when the kind is not withheld)."""
    a, b = dict(before.withheld), dict(after.withheld)
    kinds = list(dict.fromkeys([*a, *b]))
    return [
        {"kind": k, "before": list(a.get(k, ())), "after": list(b.get(k, ()))}
        for k in kinds
        if a.get(k, ()) != b.get(k, ())
    ]


def per_visit(result: Backtest) -> list[dict[str, Any]]:
    """Each visit: its moments, and for each pack every kind suggested at some moment with
    the first moment it was, and the withheld kinds with their reasons at the replay time."""
    out = []
    for replayed in result.visits:
        visit = replayed.visit
        packs = []
        for timeline in replayed.timelines:
            first = first_suggested(timeline)
            packs.append(
                {
                    "first_suggested": {k: t.isoformat() for k, t in first.items()},
                    "at_replay_time": [s.kind for s in timeline[-1].outcome.suggested],
                    "withheld": {k: list(r) for k, r in timeline[-1].outcome.withheld},
                }
            )
        out.append(
            {
                "visit": visit.id,
                "patient": replayed.patient,
                "start": visit.start.isoformat() if visit.start else None,
                "time": visit.time.isoformat(),
                "moments": len(visit.moments) or 1,
                "packs": packs,
            }
        )
    return out


def report(result: Backtest) -> dict[str, Any]:
    """The ``--json`` report (documented in rules/README.md)."""
    years = Counter(str(r.visit.time.year) for r in result.visits)
    out: dict[str, Any] = {
        "input": {
            "path": str(result.path),
            "bundle_files": result.bundle_files,
            "ndjson_files": result.ndjson_files,
            "skipped_files": [{"path": p, "reason": why} for p, why in result.skipped_files],
        },
        "workers": result.workers,
        "patients": result.patients,
        "patients_with_visits": len({r.patient for r in result.visits}),
        "visits": len(result.visits),
        "visits_skipped": result.skipped,
        "visits_by_year": dict(sorted(years.items())),
        "pack": pack_report(result, 0),
        "compare": None,
        "per_visit": per_visit(result),
    }
    if len(result.packs) > 1:
        out["compare"] = {**pack_report(result, 1), "differences": differences(result)}
    return out


#: The end of a number with a fraction or an exponent, where indented JSON ends a value
#: (a float: a string's last character is its quote, and a newline in it is escaped).
_FLOAT = re.compile(rb"[.eE][-+]?[0-9]+,?$", re.M)


def report_json(data: dict[str, Any]) -> str:
    """``json.dumps(data, indent=2)``, the same text, written by orjson: the standard
    encoder with an indent is pure Python (on 100k patients, seconds on one core after the
    workers are done). orjson writes the same text for what a report holds (string keys,
    ASCII strings, integers); where it would not (a character escaped as ``\\u``, one
    outside ASCII, a float, a key that is not a string), the standard encoder writes it
    (a report holds no float: a NaN, which orjson would write as null, cannot be in it)."""
    try:
        raw = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    except TypeError:
        return json.dumps(data, indent=2)
    if not raw.isascii() or b"\\u" in raw or b"\x7f" in raw or _FLOAT.search(raw):
        return json.dumps(data, indent=2)
    return raw.decode()
