"""Why each suggestion fired or did not: the facts, values and resources that decided.

``explain`` evaluates a pack exactly as ``evaluate`` does (the same FactContext, the same
facts) and returns, for each kind, a tree: its trigger, each withheld reason, its variant
and its cautions, every node with its truth, its evidence and, where a selector found
nothing, the resources it considered and why each did not count. Pure, like the engine:
``handoff rules explain`` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .chart import Chart, ChartEntry
from .evaluate import Evaluation, evaluate, select_encounter
from .facts import FactContext, Truth, numeric_value
from .fhir import age_in_years, status_code, youngest_birth_date
from .pack import (
    AgeAtLeast,
    AgeUnder,
    AllergyExpr,
    AllOf,
    AnyOf,
    ChartIncomplete,
    ConditionExpr,
    LatestObservationExpr,
    MedicationExpr,
    Not,
    ObservationExpr,
    Pack,
    PatientDeceased,
    Rule,
    ServiceRequestExpr,
    status_allows,
)

#: How deep named facts are expanded (deeper ones show their value and evidence only).
MAX_DEPTH = 8


@dataclass(frozen=True)
class Node:
    """One expression's part in a decision: its truth, evidence and why."""

    label: str
    value: bool
    evidence: tuple[str, ...] = ()
    detail: str = ""
    children: tuple[Node, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"label", "value", "evidence", "detail", "children"}`` (empty parts left out)."""
        out: dict[str, Any] = {"label": self.label, "value": self.value}
        if self.evidence:
            out["evidence"] = list(self.evidence)
        if self.detail:
            out["detail"] = self.detail
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        return out


@dataclass(frozen=True)
class KindExplanation:
    """Why one kind was suggested, withheld, or not triggered."""

    kind: str
    rule: str
    outcome: str  # suggested | withheld | not-triggered
    trigger: Node
    withheld: tuple[Node, ...] = ()
    variant: str | None = None
    variants: tuple[Node, ...] = ()
    cautions: tuple[Node, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The machine form of the explanation."""
        return {
            "kind": self.kind,
            "rule": self.rule,
            "outcome": self.outcome,
            "variant": self.variant,
            "trigger": self.trigger.to_json(),
            "withheld": [n.to_json() for n in self.withheld],
            "variants": [n.to_json() for n in self.variants],
            "cautions": [n.to_json() for n in self.cautions],
        }


@dataclass(frozen=True)
class Explanation:
    """The evaluation and, for each kind of the pack, why."""

    evaluation: Evaluation
    kinds: tuple[KindExplanation, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The evaluation's output plus ``explain``: one entry per kind, in pack order."""
        return {**self.evaluation.to_json(), "explain": [k.to_json() for k in self.kinds]}


def explain(
    chart: Chart,
    now: datetime,
    pack: Pack,
    encounter_id: str | None = None,
    unread: Iterable[str] = (),
) -> Explanation:
    """Evaluate (exactly as :func:`evaluate`) and explain every kind of the pack."""
    missing = tuple(unread)
    evaluation = evaluate(chart, now, pack, encounter_id, unread=missing)
    encounter = select_encounter(chart, pack.document.current_encounter, encounter_id)
    unread_set = frozenset(t.strip() for t in missing if t and t.strip())
    ctx = FactContext(chart, now, pack, encounter, unread_set)
    suggested = {s.kind: s for s in evaluation.suggestions}
    withheld = {w.kind for w in evaluation.withheld}
    kinds = tuple(
        _explain_rule(ctx, rule, suggested.get(rule.kind), rule.kind in withheld)
        for rule in pack.rules
    )
    return Explanation(evaluation, kinds)


def _explain_rule(ctx: FactContext, rule: Rule, suggestion: Any, withheld: bool) -> KindExplanation:
    """A kind's trigger, withheld reasons, variant and cautions."""
    outcome = "suggested" if suggestion else "withheld" if withheld else "not-triggered"
    blocks = [*ctx.pack.document.withholds_all(), *rule.withheld_when]
    return KindExplanation(
        kind=rule.kind,
        rule=rule.id,
        outcome=outcome,
        trigger=node(ctx, rule.when, "trigger"),
        withheld=tuple(node(ctx, w.when, f"withheld {w.reason}") for w in blocks)
        + ((node(ctx, rule.unless, "withheld excluded (unless)"),) if rule.unless else ()),
        variant=suggestion.variant if suggestion else None,
        variants=tuple(
            node(ctx, v.when, f"variant {v.name}") for v in rule.variants or () if v.when
        ),
        cautions=tuple(node(ctx, expr, f"caution {name}") for name, expr in rule.cautions.items()),
    )


def node(ctx: FactContext, expr: Any, label: str | None = None, depth: int = 0) -> Node:
    """Explain an expression: its truth, evidence, detail and parts."""
    truth = ctx.eval(expr)
    if isinstance(expr, str):
        if depth >= MAX_DEPTH:
            return _node(truth, _prefix(label, expr))
        inner = node(ctx, ctx.pack.facts[expr], None, depth + 1)
        # one line per fact: its name, then what it is defined as
        return Node(
            _prefix(label, f"{expr} = {inner.label}"),
            inner.value,
            inner.evidence,
            inner.detail,
            inner.children,
        )
    if isinstance(expr, AnyOf | AllOf):
        parts = expr.any_of if isinstance(expr, AnyOf) else expr.all_of
        name = "any of" if isinstance(expr, AnyOf) else "all of"
        return _node(
            truth,
            _prefix(label, name),
            children=tuple(node(ctx, p, None, depth) for p in parts),
        )
    if isinstance(expr, Not):
        return _node(truth, _prefix(label, "not"), children=(node(ctx, expr.not_, None, depth),))
    describe, detail = _DESCRIBERS[type(expr)](ctx, expr, truth)
    return _node(truth, _prefix(label, describe), detail=detail)


def _prefix(label: str | None, text: str) -> str:
    return f"{label}: {text}" if label else text


def _node(truth: Truth, label: str, detail: str = "", children: tuple[Node, ...] = ()) -> Node:
    return Node(label, truth.value, tuple(sorted(truth.evidence)), detail, children)


# ---------------------------------------------------------------------------------------
# primitives: what they look for, and what they found or why nothing counted


def _coded(entry: ChartEntry) -> str:
    """``Condition/x [F11.20]``: a resource with its first code."""
    code = entry.codes[0][1] if entry.codes else "?"
    return f"{entry.key} [{code}]"


def _misses(candidates: Iterable[tuple[ChartEntry, str | None]], truth: Truth) -> str:
    """Why the coded resources that are not evidence did not count."""
    notes = [f"{_coded(e)}: {why}" for e, why in candidates if why and e.key not in truth.evidence]
    return "; ".join(notes) if notes else ("" if truth.evidence else "no resource coded in it")


def _timing(ctx: FactContext, entry: ChartEntry, sel: Any, history: Any = None) -> str | None:
    """Why a resource fails a selector's visit and window filters, or None."""
    visit_filter = sel.this_visit or sel.not_this_visit
    if visit_filter and not ctx.timed(entry, _VisitOnly(sel), history):
        return "this visit" if sel.not_this_visit else "not this visit"
    if sel.within is not None and not ctx.within(entry, sel.within):
        when = entry.time.isoformat() if entry.time else "no time"
        return f"outside the last {sel.within} ({when})"
    return None


class _VisitOnly:
    """A selector's visit filters without its window (to tell which one failed)."""

    def __init__(self, sel: Any) -> None:
        self.this_visit = sel.this_visit
        self.not_this_visit = sel.not_this_visit
        self.prehospital = getattr(sel, "prehospital", None)
        self.within = None


def _status_miss(rule: Any, value: str | None, name: str) -> str | None:
    if rule is None or status_allows(rule, value):
        return None
    return f"{name} {value or 'absent'}"


def _condition(ctx: FactContext, expr: ConditionExpr, truth: Truth) -> tuple[str, str]:
    sel = expr.condition
    text = f"condition in {', '.join(sel.valueset)}"
    candidates = []
    for e in ctx.coded(sel.valueset, ("Condition",)):
        clinical = status_code(e.resource.get("clinicalStatus"))
        verification = status_code(e.resource.get("verificationStatus"))
        why = (
            _status_miss(sel.clinical_status, clinical, "clinicalStatus")
            or _status_miss(sel.verification_status, verification, "verificationStatus")
            or _timing(ctx, e, sel, sel.history_codes)
        )
        candidates.append((e, why))
    return text, _misses(candidates, truth)


def _observation(ctx: FactContext, expr: ObservationExpr, truth: Truth) -> tuple[str, str]:
    sel = expr.observation
    text = f"observation in {', '.join(sel.valueset)}" + (" (positive)" if sel.positive else "")
    candidates = [
        (
            e,
            _status_miss(sel.status, status_code(e.resource.get("status")), "status")
            or _timing(ctx, e, sel)
            or ("not positive" if sel.positive else None),
        )
        for e in ctx.coded(sel.valueset, ("Observation",))
    ]
    return text, _misses(candidates, truth)


def _latest(ctx: FactContext, expr: LatestObservationExpr, truth: Truth) -> tuple[str, str]:
    sel = expr.latest_observation_value_at_least
    text = f"latest {', '.join(sel.valueset)} >= {sel.at_least:g}"
    scored = [
        (e.time, numeric_value(e.resource), e)
        for e in ctx.coded(sel.valueset, ("Observation",))
        if status_allows(sel.status, status_code(e.resource.get("status")))
        and ctx.timed(e, sel)
        and numeric_value(e.resource) is not None
    ]
    if not scored:
        return text, f"no {', '.join(sel.valueset)} value in the window (this visit, {sel.within})"
    when, value, entry = max(scored, key=lambda s: (s[0], -(s[1] or 0)))
    return text, f"latest {value:g} at {when.isoformat() if when else '?'} ({entry.key})"


def _medication(ctx: FactContext, expr: MedicationExpr, truth: Truth) -> tuple[str, str]:
    sel = expr.medication
    types = ", ".join(sel.status)
    text = f"medication in {', '.join(sel.valueset)} ({types})"
    candidates = []
    for e in ctx.coded(sel.valueset, sel.status):
        status = status_code(e.resource.get("status"))
        intent = status_code(e.resource.get("intent"))
        why = _status_miss(sel.status_of(e.resource_type), status, "status") or (
            _status_miss(sel.intent, intent, "intent")
            if e.resource_type == "MedicationRequest"
            else None
        )
        why = why or _timing(ctx, e, sel)
        if why is None and e.key not in truth.evidence:
            why = "its supply does not reach the window"
        candidates.append((e, why))
    return text, _misses(candidates, truth)


def _allergy(ctx: FactContext, expr: AllergyExpr, truth: Truth) -> tuple[str, str]:
    sel = expr.allergy
    candidates = [
        (
            e,
            _status_miss(
                sel.clinical_status, status_code(e.resource.get("clinicalStatus")), "clinicalStatus"
            )
            or _status_miss(
                sel.verification_status,
                status_code(e.resource.get("verificationStatus")),
                "verificationStatus",
            ),
        )
        for e in ctx.coded(sel.valueset, ("AllergyIntolerance",))
    ]
    return f"allergy to {', '.join(sel.valueset)}", _misses(candidates, truth)


def _service_request(ctx: FactContext, expr: ServiceRequestExpr, truth: Truth) -> tuple[str, str]:
    sel = expr.service_request
    candidates = [
        (
            e,
            _status_miss(sel.status, status_code(e.resource.get("status")), "status")
            or _timing(ctx, e, sel),
        )
        for e in ctx.coded(sel.valueset, ("ServiceRequest",))
    ]
    return f"service request in {', '.join(sel.valueset)}", _misses(candidates, truth)


def _age(ctx: FactContext, expr: AgeAtLeast, _truth: Truth) -> tuple[str, str]:
    birth = youngest_birth_date((ctx.chart.patient or {}).get("birthDate"))
    age = "unknown (no birth date)" if birth is None else str(age_in_years(birth, ctx.now.date()))
    return f"age at least {expr.age_at_least}", f"age {age}"


def _age_under(ctx: FactContext, expr: AgeUnder, truth: Truth) -> tuple[str, str]:
    _text, detail = _age(ctx, AgeAtLeast(age_at_least=expr.age_under), truth)
    return f"age under {expr.age_under} (or unknown)", detail


def _deceased(ctx: FactContext, _expr: PatientDeceased, _truth: Truth) -> tuple[str, str]:
    patient = ctx.chart.patient or {}
    found = patient.get("deceasedDateTime") or patient.get("deceasedBoolean")
    return "patient deceased", f"deceased: {found}" if found else "alive in the chart"


def _incomplete(ctx: FactContext, expr: ChartIncomplete, _truth: Truth) -> tuple[str, str]:
    hit = [t for t in expr.chart_incomplete if t in ctx.unread]
    detail = f"not read: {', '.join(hit)}" if hit else "all read"
    return f"chart incomplete for {', '.join(expr.chart_incomplete)}", detail


_DESCRIBERS: dict[type, Any] = {
    ConditionExpr: _condition,
    ObservationExpr: _observation,
    LatestObservationExpr: _latest,
    MedicationExpr: _medication,
    AllergyExpr: _allergy,
    ServiceRequestExpr: _service_request,
    AgeAtLeast: _age,
    AgeUnder: _age_under,
    PatientDeceased: _deceased,
    ChartIncomplete: _incomplete,
}


def render(explanation: Explanation, verbose: bool = False) -> str:
    """The explanation as indented text; without ``verbose``, false branches of a true
    ``any of`` and true parts of a false ``all of`` are folded (they did not decide)."""
    lines = []
    for notice in explanation.evaluation.notices:
        unread = f": {', '.join(notice.unread)}" if notice.unread else ""
        lines.append(f"NOTICE {notice.code}{unread}")
    for k in explanation.kinds:
        head = {"suggested": "SUGGESTED", "withheld": "WITHHELD", "not-triggered": "NOT TRIGGERED"}
        variant = f" [{k.variant}]" if k.variant else ""
        lines.append(f"{k.kind}: {head[k.outcome]}{variant}  (rule {k.rule})")
        parts = [k.trigger]
        if k.outcome != "not-triggered" or verbose:
            parts += k.withheld
        if k.outcome == "suggested":
            parts += [*k.variants, *k.cautions]
        for part in parts:
            lines.extend(_render_node(part, 1, verbose))
    return "\n".join(lines)


def _render_node(n: Node, depth: int, verbose: bool) -> list[str]:
    mark = "yes" if n.value else "no "
    evidence = f"  <- {', '.join(n.evidence)}" if n.evidence else ""
    detail = f"  ({n.detail})" if n.detail else ""
    lines = [f"{'  ' * depth}{mark} {n.label}{evidence}{detail}"]
    for child in n.children:
        if not verbose and _folded(n, child):
            continue
        lines.extend(_render_node(child, depth + 1, verbose))
    return lines


def _folded(parent: Node, child: Node) -> bool:
    """A part that did not decide its parent: a false branch of a true any-of."""
    return parent.value and not child.value and parent.label.endswith("any of")
