"""Why and why not, in words with the values (issue 13 items 2 and 3): each suggestion's
evidence as a clinician reads it, the evidence that chose its variant ("COWS total score 11 at
04:04: ED start because COWS >= 8"), each caution with its evidence and what it means for the
start (the pack's words), each withheld suggestion with its reason and evidence, and the
one-line summary. Pure: the decisions are the engine's; the variant's evidence is asked of the
engine (its `when`, evaluated by the engine's own fact context), never decided here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smartapp.engine import Chart, Evaluation, Pack, Suggestion, Withheld
from smartapp.engine.facts import FactContext
from smartapp.screen.evidence import CodeTitles, evidence_item
from smartapp.screen.words import Words


def variant_evidence(
    chart: Chart, now: datetime, pack: Pack, evaluation: Evaluation, suggestion: Suggestion
) -> tuple[str, ...]:
    """The references that made the engine choose the suggestion's variant (its `when`),
    as the engine's fact context finds them; () for a default variant without `when`."""
    rule = next((r for r in getattr(pack, "rules", ()) if r.id == suggestion.rule), None)
    variants = (rule.variants or ()) if rule is not None else ()
    variant = next((v for v in variants if v.name == suggestion.variant), None)
    if variant is None or variant.when is None:
        return ()
    encounter_id = (evaluation.encounter or {}).get("id")
    key = chart.resolve(f"Encounter/{encounter_id}") if encounter_id else None
    entry = chart.entry(key) if key else None
    context = FactContext(chart, now, pack, entry, frozenset(evaluation.unread))
    return tuple(sorted(context.eval(variant.when).evidence))


class Explainer:
    """Puts one evaluation's suggestions, cautions and withheld kinds in words."""

    def __init__(self, chart: Chart, pack: Pack, now: datetime, evaluation: Evaluation) -> None:
        self.chart, self.pack, self.now, self.evaluation = chart, pack, now, evaluation
        self.titles = CodeTitles.of(pack)
        self.words = Words(pack)

    def item(self, reference: str) -> dict:
        return evidence_item(reference, self.chart, self.titles, self.now)

    def suggestion(self, suggestion: Suggestion) -> dict:
        """The words shown with a suggestion: top reason, variant and cautions."""
        cautions = list(suggestion.cautions)
        variant = self.words.variant(suggestion.variant, cautions)
        if variant:
            refs = variant_evidence(self.chart, self.now, self.pack, self.evaluation, suggestion)
            variant["evidence"] = [self.item(r) for r in refs]
        return {
            "short": self.words.kind(suggestion.kind, suggestion.title),
            "variant_words": variant,
            "caution_details": [
                self.words.caution(code)
                | {
                    "code": code,
                    "evidence": [self.item(r) for r in suggestion.caution_evidence.get(code, ())],
                }
                for code in cautions
            ],
        }

    def withheld(self, withheld: Withheld) -> dict:
        """One withheld kind: each reason in words with its evidence."""
        reasons = []
        for blocked in withheld.reasons:
            items = [self.item(r) for r in blocked.evidence]
            parts = items[0]["parts"] if items else {}
            reasons.append(
                {
                    "reason": blocked.reason,
                    "words": self.words.withheld(blocked.reason, parts),
                    "evidence": items,
                }
            )
        return {"short": self.words.kind(withheld.kind), "reasons_words": reasons}

    def summary(self, suggestions: list[dict]) -> str:
        """The one line on top: "Offer: peer recovery coach (opt-out), buprenorphine ED
        start, naloxone kit"."""
        offers = [
            self.words.offer(s["kind"], s["title"], (s.get("variant_words") or {}).get("short", ""))
            for s in suggestions
        ]
        return "Offer: " + ", ".join(offers) if offers else ""


def withheld_lines(withheld: list[dict]) -> list[dict]:
    """The "not suggested" lines: kinds withheld for the same reason share one line ("Peer
    recovery coach, Buprenorphine, Naloxone kit not suggested: recorded as deceased")."""
    lines: dict[str, dict[str, Any]] = {}
    for w in withheld:
        first = (w.get("reasons_words") or [{}])[0]
        words = first.get("words") or w.get("words", "")
        line = lines.setdefault(
            words, {"kinds": [], "words": words, "evidence": first.get("evidence", [])}
        )
        line["kinds"].append(w.get("short") or w["kind"])
        others = [r["words"] for r in w.get("reasons_words", [])[1:]]
        line.setdefault("also", []).extend(o for o in others if o not in line.get("also", []))
    return list(lines.values())
