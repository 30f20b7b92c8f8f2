"""The backtest's ``--json`` report (documented in ``rules/README.md``): counts per pack at the
replay time, by year and during the visits, the differences between two packs, and each
visit. It is made from each visit's summary (``backtest_summary``: made by the worker that
replayed the visit, or here from the replayed visits); :func:`report_text` writes the JSON
with each visit's entry as its summary holds it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from smartapp.engine import Pack
from smartapp.rulestools.backtest_summary import (
    DIFFERENCE_DEPTH,
    PER_VISIT_DEPTH,
    Counted,
    During,
    VisitSummary,
    report_json,
    summarize,
    withheld_difference,
)

if TYPE_CHECKING:
    from smartapp.rulestools.backtest import Backtest

__all__ = [
    "differences",
    "pack_report",
    "per_visit",
    "report",
    "report_json",
    "report_text",
    "summaries",
    "withheld_difference",
]


def summaries(result: Backtest) -> list[VisitSummary]:
    """The visits' summaries in the report's order (replay time, patient, visit): as the
    workers made them, else made from the replayed visits (and kept on ``result``), which
    ``collect`` put in that order already."""
    if result.summaries is None:
        result.summaries = [summarize(r) for r in result.visits]
    return result.summaries


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


def _count(
    counts: dict[str, dict[str, Any]],
    kind_name: str,
    variants: Iterable[str],
    cautions: Iterable[str],
    n: int,
) -> None:
    """Count ``n`` visits with this kind, each of these variants and cautions (the
    kinds, variants and cautions not zeroed yet enter in the order they come)."""
    kind = counts.setdefault(kind_name, {"visits": 0, "variants": {}, "cautions": {}})
    kind["visits"] += n
    for name in variants:
        kind["variants"][name] = kind["variants"].get(name, 0) + n
    for name in cautions:
        kind["cautions"][name] = kind["cautions"].get(name, 0) + n


def _add(counts: dict[str, dict[str, Any]], suggestions: Iterable[Counted], n: int = 1) -> None:
    """Count ``n`` visits with these suggestions (``n`` alike visits added at once)."""
    for kind_name, variant, cautions in suggestions:
        _count(counts, kind_name, () if variant is None else (variant,), cautions, n)


def _during_counts(pack: Pack, visits: Iterable[tuple[During, ...]]) -> dict[str, Any]:
    """Visits with each kind suggested at any moment of the visit (with every variant and
    caution it had at some moment). Alike visits are counted together (``Counter``, in
    the order each was first seen, so new names enter the counts in the visits' order)."""
    counts = _kind_counts(pack)
    with_any = 0
    for seen, n in Counter(visits).items():
        if seen:
            with_any += n
        for kind, variants, cautions in seen:
            _count(counts, kind, variants, cautions, n)
    return {"visits_with_suggestions": with_any, "counts": counts}


def pack_report(result: Backtest, index: int) -> dict[str, Any]:
    """Counts of one pack at the replay time (overall and by year), and during the visits."""
    pack = result.packs[index]
    overall = _kind_counts(pack)
    by_year: dict[int, dict[str, Any]] = {}
    with_any = 0
    visits = summaries(result)
    # alike visits counted together: a population's outcomes repeat (most are empty)
    alike = Counter((v.year, v.at_replay[index]) for v in visits)
    for (visit_year, found), n in alike.items():
        year = by_year.get(visit_year)
        if year is None:  # zeroed counts made once a year, not once a visit
            year = by_year[visit_year] = {
                "visits_with_suggestions": 0,
                "counts": _kind_counts(pack),
            }
        _add(overall, found, n)
        _add(year["counts"], found, n)
        if found:
            with_any += n
            year["visits_with_suggestions"] += n
    return {
        "id": pack.id,
        "version": pack.version,
        "hash": f"sha256:{pack.content_hash}",
        "path": str(pack.path) if pack.path else None,
        "visits_with_suggestions": with_any,
        "counts": overall,
        "by_year": {str(year): by_year[year] for year in sorted(by_year, key=str)},
        "during": _during_counts(pack, (v.during[index] for v in visits)),
    }


def differences(result: Backtest) -> list[dict[str, Any]]:
    """Visits where the compared pack's outcome (suggestions, variants, cautions, evidence
    or withheld reasons) differs from the base pack's at some moment, with the first such
    moment and the difference then."""
    return [orjson.loads(v.difference) for v in summaries(result) if v.difference is not None]


def per_visit(result: Backtest) -> list[dict[str, Any]]:
    """Each visit: its moments, and for each pack every kind suggested at some moment with
    the first moment it was, and the withheld kinds with their reasons at the replay time."""
    return [orjson.loads(v.entry) for v in summaries(result)]


def _frame(result: Backtest) -> dict[str, Any]:
    """The report without its lists of visits (``per_visit`` and ``compare``'s
    ``differences`` are empty)."""
    visits = summaries(result)
    years = Counter(map(attrgetter("year"), visits))
    out: dict[str, Any] = {
        "input": {
            "path": str(result.path),
            "bundle_files": result.bundle_files,
            "ndjson_files": result.ndjson_files,
            "skipped_files": [{"path": p, "reason": why} for p, why in result.skipped_files],
        },
        "workers": result.workers,
        "patients": result.patients,
        "patients_with_visits": len(set(map(attrgetter("patient"), visits))),
        "visits": len(visits),
        "visits_skipped": result.skipped,
        "visits_by_year": {str(y): years[y] for y in sorted(years, key=str)},
        "pack": pack_report(result, 0),
        "compare": None,
        "per_visit": [],
    }
    if len(result.packs) > 1:
        out["compare"] = {**pack_report(result, 1), "differences": []}
    return out


def report(result: Backtest) -> dict[str, Any]:
    """The ``--json`` report (documented in rules/README.md)."""
    out = _frame(result)
    out["per_visit"] = per_visit(result)
    if out["compare"] is not None:
        out["compare"]["differences"] = differences(result)
    return out


def report_text(result: Backtest) -> str:
    """``report_json(report(result))``, the same text, with each visit's entries written as
    their summaries hold them (not read back and written again)."""
    return "".join(report_parts(result))


#: Entries joined into one part of :func:`report_parts` (a part of about a megabyte).
PART_ENTRIES = 4096


def report_parts(result: Backtest) -> Iterator[str]:
    """:func:`report_text` in parts, in order, for a writer: the report of a population
    (about 100 MB at 100k patients) is never one string, so it is not copied whole by a
    join, by the command line's echo (which adds the newline to a copy) or by encoding."""
    text = report_json(_frame(result))
    visits = summaries(result)
    depth = PER_VISIT_DEPTH
    lists = [(_list_at(text, "per_visit", depth), depth, [v.entry for v in visits])]
    if len(result.packs) > 1:
        found = [v.difference for v in visits if v.difference is not None]
        depth = DIFFERENCE_DEPTH
        lists.append((_list_at(text, "differences", depth), depth, found))
    start = 0
    for at, depth, entries in sorted(lists, key=itemgetter(0)):  # in the text's order
        if not entries:
            continue
        yield text[start:at]
        inner = "\n" + "  " * depth
        between = "," + inner
        yield "[" + inner
        for first in range(0, len(entries), PART_ENTRIES):
            part = between.join(entries[first : first + PART_ENTRIES])
            yield part if first == 0 else between + part
        yield "\n" + "  " * (depth - 1) + "]"
        start = at + 2  # past the frame's "[]"
    yield text[start:]


def _list_at(text: str, key: str, depth: int) -> int:
    """Where the frame's empty list of member ``key`` (its members at ``depth``) is: the
    index of its ``[]``. The member is found once: its key at the start of a line indented
    one level less, quoted as only a key can be."""
    member = "\n" + "  " * (depth - 1) + f'"{key}": []'
    return text.index(member) + len(member) - 2
