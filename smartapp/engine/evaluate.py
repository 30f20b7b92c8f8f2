"""``evaluate``: the one decision point. A chart, a time and a pack in; suggestions,
withheld suggestions (with every reason and its evidence) and notices out.

Pure: no I/O, no clock (``now`` is an argument), the same result wherever it runs. Every
entry point (the launch screen, ``rules eval``/``test``, the backtest, CDS Hooks) calls it
and shows what it returns: no caller adds or removes a suggestion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from .chart import Chart, ChartEntry, ChartError
from .facts import FactContext, Truth
from .fhir import codings
from .pack import CurrentEncounter, Pack, Rule, Withhold, status_allows

#: Notice: the launch encounter is not an ED visit in progress (evaluated all the same).
NOT_CURRENT_ED_VISIT = "not-current-ed-visit"
#: Notice: some resource types could not be read completely (listed in ``unread``).
CHART_INCOMPLETE = "chart-incomplete"
#: Reason a version 1 ``unless`` withholds a suggestion with.
EXCLUDED = "excluded"


@dataclass(frozen=True)
class DeclineReason:
    """A reason the physician may give when declining a suggestion."""

    code: str
    label: str
    free_text: bool = False


@dataclass(frozen=True)
class Suggestion:
    """One piece of advice for the physician, with the chart evidence behind it."""

    kind: str
    variant: str | None
    cautions: tuple[str, ...]
    evidence: tuple[str, ...]
    rule: str
    title: str
    reason: str
    decline_reasons: tuple[DeclineReason, ...] = ()
    # the evidence of each caution in ``cautions`` (references, sorted)
    caution_evidence: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stable machine form: kind, variant, cautions, caution_evidence, evidence, rule."""
        return {
            "kind": self.kind,
            "variant": self.variant,
            "cautions": list(self.cautions),
            "caution_evidence": {c: list(self.caution_evidence.get(c, ())) for c in self.cautions},
            "evidence": list(self.evidence),
            "rule": self.rule,
        }


@dataclass(frozen=True)
class Blocked:
    """One reason a suggestion is withheld, with the evidence of the block."""

    reason: str
    evidence: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"reason", "evidence"}``."""
        return {"reason": self.reason, "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Withheld:
    """A suggestion whose trigger holds but that a reason blocks: reported, never silent.

    ``reasons`` lists every reason that applies, in the pack's order (``withhold_all``
    first); ``reason`` and ``evidence`` are the first one's.
    """

    kind: str
    reasons: tuple[Blocked, ...]
    trigger: tuple[str, ...]  # the evidence that made the kind's trigger hold
    rule: str

    @property
    def reason(self) -> str:
        """The first reason that applies."""
        return self.reasons[0].reason

    @property
    def evidence(self) -> tuple[str, ...]:
        """The evidence of the first reason."""
        return self.reasons[0].evidence

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "reason", "evidence", "reasons": [{"reason", "evidence"}]}``."""
        return {
            "kind": self.kind,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "reasons": [r.to_json() for r in self.reasons],
        }


@dataclass(frozen=True)
class Notice:
    """Something the physician must see with every result (before any suggestion).

    ``unread`` holds the resource types a ``chart-incomplete`` notice is about.
    """

    code: str
    unread: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"code"}``, plus ``unread`` for ``chart-incomplete``."""
        return (
            {"code": self.code, "unread": list(self.unread)} if self.unread else {"code": self.code}
        )


@dataclass(frozen=True)
class Evaluation:
    """The result of evaluating a pack on a chart at a time."""

    encounter: dict[str, Any] | None
    patient: dict[str, Any] | None
    suggestions: list[Suggestion] = field(default_factory=list)
    pack_id: str = ""
    pack_version: str = ""
    content_hash: str = ""
    now: datetime | None = None
    withheld: list[Withheld] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    unread: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The spec's output of ``rules eval --json``: ``suggestions``, ``withheld`` and
        ``notices``, with ``pack`` (id, version)."""
        return {
            "pack": {"id": self.pack_id, "version": self.pack_version},
            "suggestions": [s.to_json() for s in self.suggestions],
            "withheld": [w.to_json() for w in self.withheld],
            "notices": [n.to_json() for n in self.notices],
        }

    def notice(self, code: str) -> Notice | None:
        """The notice with this code, if the result carries it."""
        return next((n for n in self.notices if n.code == code), None)


def evaluate(
    chart: Chart,
    now: datetime,
    pack: Pack,
    encounter_id: str | None = None,
    unread: Iterable[str] = (),
) -> Evaluation:
    """Suggestions of a pack for a chart at ``now`` (timezone-aware) and a current encounter.

    ``encounter_id`` is the launch context's encounter (``abc`` or ``Encounter/abc``); without
    it the pack's ``current_encounter`` rule picks one. ``unread``: the resource types the
    caller could not read completely (scope not granted, search refused, paging cut short,
    records withheld); the pack decides what they change, and the result carries the
    ``chart-incomplete`` notice. Raises ChartError when the given encounter is not in the
    chart, ValueError when ``now`` has no time zone.
    """
    rule = pack.document.current_encounter
    missing = tuple(sorted({t.strip() for t in unread if t and t.strip()}))
    ctx, everything, fired_rules, withheld = _decide(chart, now, pack, encounter_id, missing)
    encounter = ctx.encounter
    suggestions = [_suggestion(ctx, item, fired) for item, fired in fired_rules]
    notices = _notices(rule, encounter if encounter_id else None, missing)
    notices += [Notice(b.reason) for b in everything]
    return Evaluation(
        encounter=encounter.resource if encounter else None,
        patient=chart.patient,
        suggestions=suggestions,
        pack_id=pack.id,
        pack_version=pack.version,
        content_hash=pack.content_hash,
        now=now,
        withheld=withheld,
        notices=notices,
        unread=missing,
    )


def _decide(
    chart: Chart, now: datetime, pack: Pack, encounter_id: str | None, missing: tuple[str, ...]
) -> tuple[FactContext, tuple[Blocked, ...], list[tuple[Rule, Truth]], list[Withheld]]:
    """Every decision of :func:`evaluate`: the reasons every suggestion is withheld for,
    the rules that fired and are suggested (with their truth), and those withheld."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    encounter = select_encounter(chart, pack.document.current_encounter, encounter_id)
    ctx = FactContext(chart, now, pack, encounter, frozenset(missing))
    everything = _blocks(ctx, pack.document.withholds_all())
    suggested: list[tuple[Rule, Truth]] = []
    withheld: list[Withheld] = []
    for item in pack.rules:
        fired = ctx.eval(item.when)
        if not fired.value:
            continue
        reasons = everything + _rule_blocks(ctx, item)
        if reasons:
            withheld.append(Withheld(item.kind, reasons, tuple(sorted(fired.evidence)), item.id))
        else:
            suggested.append((item, fired))
    return ctx, everything, suggested, withheld


#: What :func:`decisions` gives: each suggestion as (kind, variant, cautions, evidence),
#: each withheld kind as (kind, its reasons).
Decisions = tuple[
    tuple[tuple[str, str | None, tuple[str, ...], tuple[str, ...]], ...],
    tuple[tuple[str, tuple[str, ...]], ...],
]


def decisions(chart: Chart, now: datetime, pack: Pack, encounter_id: str) -> Decisions:
    """What :func:`evaluate` decides, and only that (the backtest compares nothing else,
    at every moment of every visit): its suggestions' kind, variant, cautions and
    evidence, and its withheld kinds with their reasons, made by the same code."""
    ctx, _everything, fired_rules, withheld = _decide(chart, now, pack, encounter_id, ())
    suggested = []
    for item, fired in fired_rules:
        cautions = tuple(name for name, expr in item.cautions.items() if ctx.eval(expr).value)
        suggested.append((item.kind, _variant(ctx, item), cautions, tuple(sorted(fired.evidence))))
    return tuple(suggested), tuple((w.kind, tuple(b.reason for b in w.reasons)) for w in withheld)


def _blocks(ctx: FactContext, withholds: Iterable[Withhold]) -> tuple[Blocked, ...]:
    """The reasons (in order) whose ``when`` holds, each with its evidence."""
    out = []
    for withhold in withholds:
        truth = ctx.eval(withhold.when)
        if truth.value:
            out.append(Blocked(withhold.reason, tuple(sorted(truth.evidence))))
    return tuple(out)


def _rule_blocks(ctx: FactContext, rule: Rule) -> tuple[Blocked, ...]:
    """A rule's own reasons: ``withheld_when`` in order, then a version 1 ``unless``."""
    found = _blocks(ctx, rule.withheld_when)
    if rule.unless is not None:
        found += _blocks(ctx, (Withhold(reason=EXCLUDED, when=rule.unless),))
    return found


def _notices(
    rule: CurrentEncounter, launch: ChartEntry | None, unread: tuple[str, ...]
) -> list[Notice]:
    """``not-current-ed-visit`` for a launch encounter that is not an ED visit in progress,
    then ``chart-incomplete`` with the unread types."""
    notices = []
    if launch is not None and not (
        has_class(launch.resource, rule)
        and status_allows(rule.status, launch.resource.get("status"))
    ):
        notices.append(Notice(NOT_CURRENT_ED_VISIT))
    if unread:
        notices.append(Notice(CHART_INCOMPLETE, unread))
    return notices


def select_encounter(
    chart: Chart, rule: CurrentEncounter, encounter_id: str | None
) -> ChartEntry | None:
    """The given encounter, else the latest-starting one matching the pack's class/status."""
    if encounter_id:
        bare = "/" not in encounter_id and not encounter_id.startswith("urn:")
        ref = f"Encounter/{encounter_id}" if bare else encounter_id
        key = chart.resolve(ref)
        if key is None or not key.startswith("Encounter/"):
            raise ChartError(f"encounter {encounter_id!r} is not in the chart")
        return chart.entry(key)
    candidates = [
        e
        for e in chart.of_type("Encounter")
        if has_class(e.resource, rule) and status_allows(rule.status, e.resource.get("status"))
    ]
    if not candidates:
        return None
    return max(candidates, key=_start_order)


def _start_order(entry: ChartEntry) -> tuple[bool, float, str]:
    """Order encounters by start (those without one first), then by key for stability."""
    started = entry.time is not None
    return started, entry.time.timestamp() if entry.time else 0.0, entry.key


def has_class(encounter: dict[str, Any], rule: CurrentEncounter) -> bool:
    """Encounter.class as an R4 Coding (or R5 list of CodeableConcepts) matches."""
    value = encounter.get("class")
    wanted = rule.class_
    if isinstance(value, dict) and "coding" not in value:  # the code first: it differs most
        return value.get("code") == wanted.code and value.get("system") == wanted.system
    concepts = value if isinstance(value, list) else [value]
    pair = (wanted.system, wanted.code)
    return any(c == pair for concept in concepts for c in codings(concept))


def _suggestion(ctx: FactContext, rule: Rule, fired: Truth) -> Suggestion:
    """The suggestion of a rule that fired and is not withheld."""
    catalogue = ctx.pack.decline_reasons
    cautions = {
        name: tuple(sorted(truth.evidence))
        for name, expr in rule.cautions.items()
        if (truth := ctx.eval(expr)).value
    }
    return Suggestion(
        kind=rule.kind,
        variant=_variant(ctx, rule),
        cautions=tuple(cautions),
        caution_evidence=MappingProxyType(cautions),
        evidence=tuple(sorted(fired.evidence)),
        rule=rule.id,
        title=rule.title,
        reason=rule.reason,
        decline_reasons=tuple(
            DeclineReason(code, catalogue[code].label, catalogue[code].free_text)
            for code in rule.decline_reasons
        ),
    )


def _variant(ctx: FactContext, rule: Rule) -> str | None:
    """First variant whose ``when`` holds; the last (default) has none."""
    for variant in rule.variants or ():
        if variant.when is None or ctx.eval(variant.when).value:
            return variant.name
    return None
