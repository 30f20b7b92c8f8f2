"""Replaying history: every past ED visit of a chart, evaluated at its own time.

Pure: charts and packs in, per-visit suggestions out (reading files and running workers
is ``smartapp.rulestools.backtest``'s job). The semantics are documented in ``rules/README.md``
("Replaying history"):

* the visits are the chart's encounters of the pack's ED class (``current_encounter.class``,
  by default EMER in ``v3-ActCode``), except those ``planned``, ``cancelled`` or
  ``entered-in-error``;
* a visit's **replay time** is its ``period.end`` (a launch happens during the visit; what
  was recorded during it counts), or, when it has no end (or an end before its start), the
  last time the chart changed at or after its ``period.start`` (else that start); a visit
  with no time at all is skipped;
* the visit is evaluated at each of its **moments**: its start (arrival), every time a
  resource the rules read entered the chart (or changed status) during it, and the replay
  time (discharge); at each, on the chart as it stood then (:meth:`Chart.as_of`), as the
  launch context's encounter, in progress, with ``now`` = that moment. The outcome at the
  replay time is the visit's result; the outcomes in between make its timeline.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from . import moment_guard
from .chart import MEDICATION_TYPES, Chart, ChartItem, resource_key
from .evaluate import Evaluation, decisions, evaluate, has_class
from .fact_plan import fact_plan
from .fhir import parse_datetime, reference_string, type_id_of
from .pack import CurrentEncounter, Pack

#: Encounter statuses that mean the visit never happened: not replayed.
NOT_A_VISIT = frozenset({"planned", "cancelled", "entered-in-error"})
#: Resource types the rules read: only their arrival (or change) can change an outcome.
READ_TYPES = frozenset(
    {
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "AllergyIntolerance",
        "ServiceRequest",
        *MEDICATION_TYPES,
    }
)


@dataclass(frozen=True, slots=True)
class Visit:
    """A past ED visit and the time it is replayed at."""

    key: str  # Encounter/<id>
    start: datetime | None
    end: datetime | None
    time: datetime  # the replay time: end, else the last change since the start, else start
    moments: tuple[datetime, ...] = ()  # arrival, each change during the visit, discharge

    @property
    def id(self) -> str:
        """The Encounter's id."""
        return self.key.split("/", 1)[1]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its fields in order (the backtest's workers send every visit to the
        parent; a slotted dataclass's own pickling calls ``fields()`` for each object)."""
        return (Visit, (self.key, self.start, self.end, self.time, self.moments))


class Suggested(NamedTuple):
    """A suggestion as a backtest compares it."""

    kind: str
    variant: str | None
    cautions: tuple[str, ...]
    evidence: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "variant", "cautions", "evidence"}``."""
        return {
            "kind": self.kind,
            "variant": self.variant,
            "cautions": list(self.cautions),
            "evidence": list(self.evidence),
        }


class Outcome(NamedTuple):
    """What one pack gave at one moment: suggestions, and withheld kinds with their reasons."""

    suggested: tuple[Suggested, ...]
    withheld: tuple[tuple[str, tuple[str, ...]], ...]


class Moment(NamedTuple):
    """A moment of a visit at which a pack's outcome became ``outcome``."""

    time: datetime
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Replayed:
    """One visit replayed with one or more packs (``results[i]`` is ``packs[i]``'s).

    ``results``: the suggestions at the replay time (discharge). ``timelines[i]``: pack
    ``i``'s outcome at the visit's first moment, then at each moment it changed.
    """

    patient: str | None  # Patient id
    visit: Visit
    results: tuple[tuple[Suggested, ...], ...]
    timelines: tuple[tuple[Moment, ...], ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its fields in order, as :class:`Visit`."""
        return (Replayed, (self.patient, self.visit, self.results, self.timelines))


def change_times(chart: Chart, packs: Sequence[Pack] = ()) -> list[datetime]:
    """Sorted distinct times at which a resource the rules read entered the chart or took
    its recorded status (an abatement, a death, an end).

    With ``packs``, only resources that can change their outcome count: the patient, the
    encounters, and resources coded in a value set a pack uses (others leave every fact
    as it was, so replaying at their times would only repeat an outcome).
    """
    if packs:
        return list(moment_guard.changes(chart, packs).times)
    read = (e.key for e in chart.of_all() if e.resource_type in READ_TYPES)
    return moment_guard.changes_of(chart, read).times


def ed_visits(
    chart: Chart, rule: CurrentEncounter, packs: Sequence[Pack] = ()
) -> tuple[list[Visit], list[str]]:
    """The chart's replayable ED visits (by replay time), each with its moments (the times
    the chart changed during it, for ``packs``: see :func:`change_times`), and the keys of
    those skipped because they carry no time at all."""
    visits: list[Visit] = []
    skipped: list[str] = []
    times: list[datetime] | None = None
    for entry in chart.of_type("Encounter"):
        resource = entry.resource
        if not has_class(resource, rule) or resource.get("status") in NOT_A_VISIT:
            continue
        raw = resource.get("period")
        period: dict[str, Any] = raw if isinstance(raw, dict) else {}
        start, end = parse_datetime(period.get("start")), parse_datetime(period.get("end"))
        if start is None and end is None:
            skipped.append(entry.key)
            continue
        if times is None:
            times = change_times(chart, packs)
        visits.append(_visit(entry.key, start, end, times))
    visits.sort(key=lambda v: (v.time, v.key))
    return visits, skipped


def _visit(key: str, start: datetime | None, end: datetime | None, times: list[datetime]) -> Visit:
    """A visit with its replay time and moments (``times``: the chart's change times)."""
    if end is not None and (start is None or end >= start):
        time = end
    else:
        assert start is not None
        later = times[bisect_left(times, start) :]
        time = later[-1] if later else start
    first = start if start is not None else time
    inside = times[bisect_left(times, first) : bisect_right(times, time)]
    return Visit(key, start, end, time, tuple(sorted({first, *inside, time})))


def replay_visit(chart: Chart, visit: Visit, pack: Pack) -> Evaluation:
    """Evaluate one visit at its replay time on the chart as it stood then."""
    return evaluate(chart.as_of(visit.time, visit.key), visit.time, pack, visit.key)


def replay(
    chart: Chart, packs: Sequence[Pack], visits: Iterable[Visit] | None = None
) -> list[Replayed]:
    """Replay every ED visit of a chart (the first pack's ED class picks them)."""
    if visits is None:
        visits, _skipped = ed_visits(chart, packs[0].document.current_encounter, packs)
    patient = (chart.patient or {}).get("id")
    out = []
    for visit in visits:
        timelines = replay_moments(chart, visit, packs)
        results = tuple(timeline[-1].outcome.suggested for timeline in timelines)
        out.append(Replayed(patient, visit, results, timelines))
    return out


def replay_moments(
    chart: Chart, visit: Visit, packs: Sequence[Pack]
) -> tuple[tuple[Moment, ...], ...]:
    """Each pack's timeline over the visit's moments (the last is the replay time)."""
    moments = visit.moments or (visit.time,)
    if _silent(chart, visit, packs):
        return tuple((Moment(moments[0], NOTHING),) for _ in packs)
    timelines: list[list[Moment]] = [[] for _ in packs]
    evaluated: datetime | None = None  # the last moment evaluated
    for time in moments:
        if evaluated is not None and moment_guard.unchanged(
            chart, visit.key, packs, evaluated, time
        ):
            continue  # each outcome is the one at `evaluated`: the timelines go on as they are
        evaluated = time
        view = chart.as_of(time, visit.key)
        for timeline, pack in zip(timelines, packs, strict=True):
            suggestions, withheld = decisions(view, time, pack, visit.key)
            found = Outcome(tuple(Suggested(*s) for s in suggestions), withheld)
            if not timeline or timeline[-1].outcome != found:
                timeline.append(Moment(time, found))
    return tuple(tuple(timeline) for timeline in timelines)


#: The outcome of an evaluation in which no rule fired.
NOTHING = Outcome((), ())


def _silent(chart: Chart, visit: Visit, packs: Sequence[Pack]) -> bool:
    """Whether no pack's rule can fire on this chart at any moment (fact_plan), so each
    moment's outcome is NOTHING, as evaluating would find (an encounter evaluate cannot
    read, a ``diagnosis`` it cannot list or a start it cannot look back from, is
    evaluated all the same, to fail as it does)."""
    if not all(fact_plan(chart, pack).silent for pack in packs):
        return False
    entry = chart.entry(visit.key)
    if entry is None:
        return False
    diagnosis = entry.resource.get("diagnosis")
    if diagnosis and not isinstance(diagnosis, list | dict | str):
        return False
    for pack in packs:
        history = pack.document.current_encounter.condition_history
        if history is not None and entry.time is not None:
            try:
                entry.time - history
            except OverflowError:
                return False
    return True


def outcome(evaluation: Evaluation) -> Outcome:
    """The comparable form of an evaluation: suggestions and withheld reasons."""
    return Outcome(
        suggested(evaluation),
        tuple((w.kind, tuple(b.reason for b in w.reasons)) for w in evaluation.withheld),
    )


def outcome_at(timeline: Sequence[Moment], time: datetime) -> Outcome | None:
    """The outcome a timeline had at ``time`` (None before its first moment)."""
    found = None
    for moment in timeline:
        if moment.time > time:
            break
        found = moment.outcome
    return found


def first_difference(
    base: Sequence[Moment], other: Sequence[Moment]
) -> tuple[datetime, Outcome, Outcome] | None:
    """The first moment at which two packs' outcomes differ, with both outcomes."""
    for time in sorted({m.time for m in base} | {m.time for m in other}):
        a, b = outcome_at(base, time), outcome_at(other, time)
        if a is not None and b is not None and a != b:
            return time, a, b
    return None


def first_suggested(timeline: Sequence[Moment]) -> dict[str, datetime]:
    """Each kind suggested at some moment, with the first moment it was."""
    first: dict[str, datetime] = {}
    for moment in timeline:
        for s in moment.outcome.suggested:
            first.setdefault(s.kind, moment.time)
    return first


def suggested(evaluation: Evaluation) -> tuple[Suggested, ...]:
    """The comparable form of an evaluation's suggestions."""
    return tuple(
        Suggested(s.kind, s.variant, s.cautions, s.evidence) for s in evaluation.suggestions
    )


# ---------------------------------------------------------------------------------------
# comparing two packs on one visit


@dataclass(frozen=True)
class Difference:
    """How two packs' suggestions for one visit differ."""

    added: tuple[Suggested, ...]  # kinds only the other pack suggests
    removed: tuple[Suggested, ...]  # kinds only the base pack suggests
    changed: tuple[tuple[Suggested, Suggested], ...]  # same kind: (base, other)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def difference(base: Sequence[Suggested], other: Sequence[Suggested]) -> Difference:
    """Kinds added and removed, and kinds whose variant, cautions or evidence changed."""
    before = {s.kind: s for s in base}
    after = {s.kind: s for s in other}
    return Difference(
        added=tuple(s for s in other if s.kind not in before),
        removed=tuple(s for s in base if s.kind not in after),
        changed=tuple((s, after[s.kind]) for s in base if s.kind in after and after[s.kind] != s),
    )


# ---------------------------------------------------------------------------------------
# resources of several patients (a bulk export, a multi-patient bundle)


def split_by_patient(items: Iterable[ChartItem]) -> dict[str | None, list[ChartItem]]:
    """Group resources by the patient they are about, keyed ``Patient/<id>``.

    A Patient belongs to itself; another resource to the patient its ``subject`` or
    ``patient`` references (``Patient/x``, an absolute URL, or a bundle ``urn:uuid:``
    fullUrl). Resources about no patient are left out, except Medications, which go to
    every patient (orders may reference them); with no patient at all, everything is one
    group keyed None.
    """
    items = list(items)
    aliases: dict[str, str] = {}
    keys: list[str] = []
    for full_url, resource, where in items:
        key = resource_key(resource, full_url, where)
        keys.append(key)
        if full_url:
            aliases[full_url] = key
    groups: dict[str | None, list[ChartItem]] = {}
    shared: list[ChartItem] = []
    for item, key in zip(items, keys, strict=True):
        resource = item[1]
        if resource["resourceType"] == "Patient":
            groups.setdefault(key, []).append(item)
            continue
        owner = _patient_of(resource, aliases)
        if owner is not None:
            groups.setdefault(owner, []).append(item)
        elif resource["resourceType"] == "Medication":
            shared.append(item)
    if not groups:
        return {None: items} if items else {}
    for group in groups.values():
        group.extend(shared)
    return groups


def patient_of(item: ChartItem) -> str | None:
    """The group :func:`split_by_patient` puts a resource read on its own in (bulk-export
    NDJSON, where nothing has a fullUrl): ``Patient/<id>``, or None when it is about no
    patient. Lets a reader group a population's resources without holding them."""
    full_url, resource, where = item
    if resource["resourceType"] == "Patient":
        return resource_key(resource, full_url, where)
    return _patient_of(resource, {})


def _patient_of(resource: dict[str, Any], aliases: dict[str, str]) -> str | None:
    """Key of the patient a resource's subject or patient references, if it is one."""
    for element in ("subject", "patient"):
        ref = reference_string(resource.get(element))
        if ref is None:
            continue
        key = aliases.get(ref) or type_id_of(ref)
        if key is not None and key.startswith("Patient/"):
            return key
    return None
