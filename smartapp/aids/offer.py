"""Which aids the engine's result calls for, for one evaluation. Pure: no I/O.

- The COWS calculator, when buprenorphine is suggested and no COWS counts for this visit:
  "counts" is the engine's own latest-COWS fact (the pack's `latest_observation_value_at_least`
  over the `cows` value set: its statuses, look-back and this-visit rule) asked without a
  threshold, so a score from an earlier visit, a stale or a cancelled one never hides the
  calculator and a score of this visit always does. Nothing is recomputed here.
- The DSM-5 OUD checklist, when buprenorphine carries the engine's `confirm-oud` caution (OUD
  evidence that rests on an overdose alone).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smartapp.engine import Chart, Evaluation, Pack
from smartapp.engine.evaluate import select_encounter
from smartapp.engine.facts import FactContext, numeric_value
from smartapp.engine.kinds import MOUD_BUPRENORPHINE
from smartapp.engine.pack import LatestObservationExpr

#: The pack's value set of COWS totals (clinical-rules.md, evidence group `cows`).
COWS_VALUESET = "cows"
#: The engine's caution: OUD evidence without an OUD diagnosis (an overdose alone).
CONFIRM_OUD = "confirm-oud"


def cows_fact(pack: Pack) -> LatestObservationExpr | None:
    """The pack's latest-COWS expression (the first named fact over the `cows` value set)."""
    for expr in pack.facts.values():
        if (
            isinstance(expr, LatestObservationExpr)
            and COWS_VALUESET in expr.latest_observation_value_at_least.valueset
        ):
            return expr
    return None


def cows_code(pack: Pack) -> dict[str, str] | None:
    """The site's COWS code: the pack's `cows` value set's first literal code (default
    `urn:handoff:flowsheet` `cows-total`), as a Coding; None if it holds none."""
    valueset = pack.valuesets.get(COWS_VALUESET)
    if valueset is None:
        return None
    for system in sorted(valueset.includes):
        codes = sorted(valueset.includes[system].exact)
        if codes:
            return {"system": system, "code": codes[0]}
    return None


def latest_cows(
    evaluation: Evaluation, chart: Chart, pack: Pack, now: datetime
) -> dict[str, Any] | None:
    """The COWS that counts for this visit (reference and value), as the engine's fact finds
    it with its threshold set aside; None when none counts (or the pack has no COWS fact)."""
    expr = cows_fact(pack)
    encounter_id = (evaluation.encounter or {}).get("id")
    if expr is None or not encounter_id:
        return None
    entry = select_encounter(chart, pack.document.current_encounter, str(encounter_id))
    any_value = expr.model_copy(
        update={
            "latest_observation_value_at_least": expr.latest_observation_value_at_least.model_copy(
                update={"at_least": float("-inf")}
            )
        }
    )
    ctx = FactContext(chart, now, pack, entry, frozenset(evaluation.unread))
    truth = ctx.eval(any_value)
    if not truth.value:
        return None
    reference = sorted(truth.evidence)[0]
    value = numeric_value(chart.get(reference) or {})
    return {"reference": reference, "value": value}


def for_screen(evaluation: Evaluation, chart: Chart, pack: Pack, now: datetime) -> dict:
    """The aids to offer with this evaluation, as JSON for `shown["aids"]`:
    `{"cows": {"offered", "latest"}, "dsm5": {"offered"}}`."""
    bup = next((s for s in evaluation.suggestions if s.kind == MOUD_BUPRENORPHINE), None)
    latest = latest_cows(evaluation, chart, pack, now) if bup is not None else None
    return {
        "cows": {
            "offered": bup is not None and latest is None and cows_code(pack) is not None,
            "latest": latest,
        },
        "dsm5": {"offered": bup is not None and CONFIRM_OUD in bup.cautions},
    }
