"""What the backtest's report keeps of one replayed visit, made where the visit was replayed.

A population backtest replays some 230,000 visits on 100k patients. Its report counts their
suggestions and lists each visit; done by the parent process after the workers end, that was
seconds of one core while the others waited (and each visit's whole timelines were sent to
it). A worker now sums up each visit as it replays it (:func:`summarize`): the suggestions
the counts need, and the visit's ``per_visit`` entry (and, comparing two packs, its
``differences`` entry) already written as the JSON text the report holds at its place. The
parent sorts the summaries, counts and joins the text (``backtest_report``).

The text is what ``json.dumps(..., indent=2)`` of the whole report writes there (the report's
documented form, ``rules/README.md``): ``report_json`` of the entry, each line after the first
indented to the entry's depth.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from smartapp.engine.history import (
    Moment,
    Outcome,
    Replayed,
    difference,
    first_difference,
    first_suggested,
)

#: Where the report holds a ``per_visit`` entry (in the report's object, in its list) and a
#: ``differences`` entry (in ``compare``'s object, in its list): the entry's nesting depth.
PER_VISIT_DEPTH = 2
DIFFERENCE_DEPTH = 3

#: A suggestion as the counts read it: kind, variant, cautions.
Counted = tuple[str, str | None, tuple[str, ...]]
#: A kind suggested at some moment of a visit, with every variant and caution it had then.
During = tuple[str, tuple[str, ...], tuple[str, ...]]


class VisitSummary(NamedTuple):
    """One replayed visit as the report needs it (``packs[i]``'s at index ``i``)."""

    order: tuple[datetime, str, str]  # the report's order: replay time, patient, visit key
    patient: str | None
    year: int  # of the replay time
    at_replay: tuple[tuple[Counted, ...], ...]  # each pack's suggestions at the replay time
    during: tuple[tuple[During, ...], ...]  # each pack's kinds suggested during the visit
    entry: str  # the visit's ``per_visit`` entry, as JSON text at its depth
    difference: str | None  # its ``differences`` entry (two packs that differ), likewise


def report_order(replayed: Replayed) -> tuple[datetime, str, str]:
    """Where a visit comes in the report: by replay time, then patient, then visit key."""
    return replayed.visit.time, replayed.patient or "", replayed.visit.key


def summarize(replayed: Replayed) -> VisitSummary:
    """The summary of a replayed visit (pure)."""
    visit = replayed.visit
    found = first_difference(*replayed.timelines) if len(replayed.timelines) > 1 else None
    return VisitSummary(
        order=report_order(replayed),
        patient=replayed.patient,
        year=visit.time.year,
        at_replay=tuple(
            tuple((s.kind, s.variant, s.cautions) for s in results) for results in replayed.results
        ),
        during=tuple(_during(timeline) for timeline in replayed.timelines),
        entry=json_at(visit_entry(replayed), PER_VISIT_DEPTH),
        difference=None
        if found is None
        else json_at(difference_entry(replayed, *found), DIFFERENCE_DEPTH),
    )


def _during(timeline: tuple[Moment, ...]) -> tuple[During, ...]:
    """Each kind suggested at some moment, with the variants and cautions it had (sorted)."""
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for moment in timeline:
        for s in moment.outcome.suggested:
            variants, cautions = seen.setdefault(s.kind, (set(), set()))
            if s.variant is not None:
                variants.add(s.variant)
            cautions.update(s.cautions)
    return tuple((kind, tuple(sorted(v)), tuple(sorted(c))) for kind, (v, c) in seen.items())


def visit_entry(replayed: Replayed) -> dict[str, Any]:
    """The visit's ``per_visit`` entry: its moments, and for each pack every kind suggested
    at some moment with the first moment it was, and the withheld kinds with their reasons
    at the replay time."""
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
    return {
        "visit": visit.id,
        "patient": replayed.patient,
        "start": visit.start.isoformat() if visit.start else None,
        "time": visit.time.isoformat(),
        "moments": len(visit.moments) or 1,
        "packs": packs,
    }


def difference_entry(
    replayed: Replayed, moment: datetime, before: Outcome, after: Outcome
) -> dict[str, Any]:
    """The visit's ``differences`` entry: the first moment the compared pack's outcome
    differs from the base pack's, and the difference then."""
    diff = difference(before.suggested, after.suggested)
    return {
        "visit": replayed.visit.id,
        "patient": replayed.patient,
        "time": replayed.visit.time.isoformat(),
        "moment": moment.isoformat(),
        "added": [s.to_json() for s in diff.added],
        "removed": [s.to_json() for s in diff.removed],
        "changed": [
            {"kind": a.kind, "before": a.to_json(), "after": b.to_json()} for a, b in diff.changed
        ],
        "withheld": withheld_difference(before, after),
    }


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


def json_at(value: Any, depth: int) -> str:
    """``value`` as ``json.dumps(report, indent=2)`` writes it at nesting ``depth`` of the
    report (its first line not indented: the line it starts is the report's). Strings hold
    no raw newline (JSON escapes it), so each newline is the encoder's own."""
    return report_json(value).replace("\n", "\n" + "  " * depth)


#: The end of a number with a fraction or an exponent, where indented JSON ends a value
#: (a float: a string's last character is its quote, and a newline in it is escaped).
_FLOAT = re.compile(rb"[.eE][-+]?[0-9]+,?$", re.M)


def report_json(data: Any) -> str:
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
