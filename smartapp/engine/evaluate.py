"""``evaluate``: the one decision point. A chart, a time and a pack in; suggestions out.

Pure: no I/O, no clock (``now`` is an argument), the same result wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .chart import Chart, ChartEntry, ChartError
from .facts import FactContext
from .fhir import codings
from .pack import CurrentEncounter, Pack, Rule, status_allows


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

    def to_json(self) -> dict[str, Any]:
        """The stable machine form: kind, variant, cautions, evidence, rule."""
        return {
            "kind": self.kind,
            "variant": self.variant,
            "cautions": list(self.cautions),
            "evidence": list(self.evidence),
            "rule": self.rule,
        }


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

    def to_json(self) -> dict[str, Any]:
        """``{"pack": {"id", "version"}, "suggestions": [...]}`` as ``rules eval`` prints it."""
        return {
            "pack": {"id": self.pack_id, "version": self.pack_version},
            "suggestions": [s.to_json() for s in self.suggestions],
        }


def evaluate(
    chart: Chart, now: datetime, pack: Pack, encounter_id: str | None = None
) -> Evaluation:
    """Suggestions of a pack for a chart at ``now`` (timezone-aware) and a current encounter.

    ``encounter_id`` is the launch context's encounter (``abc`` or ``Encounter/abc``); without
    it the pack's ``current_encounter`` rule picks one. Raises ChartError when the given
    encounter is not in the chart, ValueError when ``now`` has no time zone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    encounter = select_encounter(chart, pack.document.current_encounter, encounter_id)
    ctx = FactContext(chart, now, pack, encounter)
    blocked = pack.document.no_suggestions_when
    suggestions: list[Suggestion] = []
    if blocked is None or not ctx.eval(blocked).value:
        suggestions = [s for rule in pack.rules if (s := _suggest(ctx, rule)) is not None]
    return Evaluation(
        encounter=encounter.resource if encounter else None,
        patient=chart.patient,
        suggestions=suggestions,
        pack_id=pack.id,
        pack_version=pack.version,
        content_hash=pack.content_hash,
        now=now,
    )


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
    wanted = (rule.class_.system, rule.class_.code)
    if isinstance(value, dict) and "coding" not in value:
        return (value.get("system"), value.get("code")) == wanted
    concepts = value if isinstance(value, list) else [value]
    return any(c == wanted for concept in concepts for c in codings(concept))


def _suggest(ctx: FactContext, rule: Rule) -> Suggestion | None:
    """The suggestion of a rule, or None when it does not fire or is blocked."""
    fired = ctx.eval(rule.when)
    if not fired.value or (rule.unless is not None and ctx.eval(rule.unless).value):
        return None
    catalogue = ctx.pack.decline_reasons
    return Suggestion(
        kind=rule.kind,
        variant=_variant(ctx, rule),
        cautions=tuple(name for name, expr in rule.cautions.items() if ctx.eval(expr).value),
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
