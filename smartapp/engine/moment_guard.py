"""Whether a visit's outcome can differ between two of its moments (``replay_moments``).

A replay evaluates each visit at each of its moments: its arrival, each time the chart
changed during it, its discharge. Most visits have two, and their outcome at discharge is
the one at arrival. An evaluation reads its time (``now``) only through the chart as it
stood then and through three tests of ``facts``: a selector's ``within`` window, a
medication selector's supply filters, and the patient's age (on ``now``'s date). So when,
between two moments, no resource the packs read entered the chart or changed (but the
visit's own encounter, which every view shows in progress), both moments fall on the same
date, and each window and supply test gives the same answer at both for every resource it
can be asked of, the later moment's outcome is the earlier one's, and is not evaluated
again (:func:`unchanged`). Any new use of ``now`` by the facts must be added here:
``tests/engine/test_moment_guard.py`` replays with and without this guard.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import asof
from .chart import Chart, ChartEntry
from .fact_plan import fact_plan, pack_plan
from .facts import supply_allows
from .pack import Pack


@dataclass(frozen=True, slots=True)
class Changes:
    """When a resource the packs read entered the chart or took its recorded form: the
    sorted distinct times, and the keys of the resources that did at each."""

    times: list[datetime]
    keys: list[frozenset[str]]


#: The owner of each chart's changes (``Chart.derived``), per tuple of packs.
_CHANGES = object()


def changes(chart: Chart, packs: Sequence[Pack]) -> Changes:
    """The chart's changes for these packs: the patient, the encounters and the resources
    coded in a value set a pack uses (worked out once per chart and packs)."""
    packs = tuple(packs)
    held: dict[tuple[int, ...], tuple[tuple[Pack, ...], Changes]] = chart.derived(
        _CHANGES, lambda _full: {}
    )
    ids = tuple(map(id, packs))
    found = held.get(ids)
    if found is None or any(a is not b for a, b in zip(found[0], packs, strict=True)):
        found = held[ids] = (packs, _changes(chart, packs))  # kept with the packs: ids stay theirs
    return found[1]


def _changes(chart: Chart, packs: tuple[Pack, ...]) -> Changes:
    read: dict[str, ChartEntry] = {}
    for pack in packs:
        for valueset in pack.valuesets.values():
            read.update((e.key, e) for e in chart.members(valueset))
    for rtype in ("Patient", "Encounter"):
        read.update((e.key, e) for e in chart.of_type(rtype))
    return changes_of(chart, read)


def changes_of(chart: Chart, keys: Iterable[str]) -> Changes:
    """When each of these resources entered the chart or took its recorded form (a
    resource with no time, or undated, never does)."""
    at: dict[datetime, set[str]] = {}
    undated = asof.UNDATED
    for key, appears, change in chart.times_of(keys):
        for time in (appears, change):
            if time is not None and time != undated:
                found = at.get(time)
                if found is None:
                    at[time] = {key}
                else:
                    found.add(key)
    times = sorted(at)
    return Changes(times, [frozenset(at[t]) for t in times])


def unchanged(
    chart: Chart, visit: str, packs: Sequence[Pack], earlier: datetime, later: datetime
) -> bool:
    """Whether every pack's outcome on visit ``visit`` (its key) at ``later`` is its outcome
    at ``earlier`` (an earlier moment of the visit), without evaluating it (see above).
    False is no answer: the moment is evaluated."""
    if earlier.date() != later.date():  # an age may have changed at midnight
        return False
    found = changes(chart, packs)
    times = found.times
    for keys in found.keys[bisect_right(times, earlier) : bisect_right(times, later)]:
        if len(keys) > 1 or visit not in keys:
            return False
    view: Chart | None = None
    for pack in packs:
        plan = fact_plan(chart, pack)
        for selector, window, reasons, supply in pack_plan(pack).now_reads:
            candidates = plan.candidates.get(id(selector), ())
            if window is not None:
                entries = candidates
                if reasons:  # a condition's: encounter reasons read as conditions
                    entries = entries + chart.with_element("Encounter", "reasonCode")
                if not _same_windows(entries, window, earlier, later):
                    return False
            if supply and candidates:
                view = view or chart.as_of(later, visit)  # the forms at both times
                for entry in view.shown(candidates):
                    if supply_allows(selector, entry, earlier) != supply_allows(
                        selector, entry, later
                    ):
                        return False
    return True


def _same_windows(
    entries: Sequence[ChartEntry], window: timedelta, earlier: datetime, later: datetime
) -> bool:
    """Each entry's time in ``[now - window, now]`` at both times, or at neither (as
    ``FactContext.within``)."""
    for entry in entries:
        time = entry.time
        if time is not None and (earlier - window <= time <= earlier) != (
            later - window <= time <= later
        ):
            return False
    return True
