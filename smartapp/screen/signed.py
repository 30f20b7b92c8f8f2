"""After Sign, the clinician's summary (issue 13 item 5): what reached the chart, what the
physician must still do in the EHR, what is queued, in words; resource ids stay behind a
details toggle on the page. Pure: a signed referral (the outbox row) in, lines out.
"""

from __future__ import annotations

from typing import Any

from smartapp.engine.kinds import MOUD_BUPRENORPHINE, NALOXONE_KIT, PRC_CONSULT
from smartapp.screen.decisions import decided

# What each written resource is, for the physician.
CHART_WORDS = {
    "ServiceRequest": "the coach consult order",
    "Task": "the coach team's task",
    "Communication": "a message to the coach pool",
    "DocumentReference": "a note of the decision",
    "Provenance": "who signed it (provenance)",
}
DRAFT_NAMES = {MOUD_BUPRENORPHINE: "buprenorphine", NALOXONE_KIT: "naloxone kit"}


def accepted_kinds(referral: Any) -> list[str]:
    return [kind for kind, d in decided(referral).items() if d.get("accepted")]


def draft_names(referral: Any) -> list[str]:
    """The accepted medications Handoff drafts (buprenorphine, naloxone kit), in order."""
    kinds = accepted_kinds(referral)
    return [name for kind, name in DRAFT_NAMES.items() if kind in kinds]


def chart_lines(referral: Any) -> list[str]:
    """What the chart holds now, one line per kind of resource written."""
    types = [w["resourceType"] for w in referral.written]
    lines = [CHART_WORDS[t] for t in CHART_WORDS if t in types and t != "Provenance"]
    drafts = types.count("MedicationRequest")
    if drafts:
        names = draft_names(referral)
        what = " and ".join(names) if len(names) == drafts else f"{drafts} medication"
        lines.append(f"draft {what} order{'s' if drafts > 1 else ''}, without a dose")
    if "Provenance" in types:
        lines.append(CHART_WORDS["Provenance"])
    return lines


def todo_lines(referral: Any) -> list[str]:
    """What the physician must still do in the EHR."""
    todo = []
    types = [w["resourceType"] for w in referral.written]
    kept = [op.get("type") for op in referral.kept]
    names = draft_names(referral)
    if "MedicationRequest" in types:
        todo.append(
            "Complete and sign the draft "
            + " and ".join(names or ["medication"])
            + " order"
            + ("s" if len(names) > 1 else "")
            + " in the EHR: Handoff drafts carry no dose."
        )
    elif names and referral.status in ("written", "held", "failed"):
        todo.append("Order " + " and ".join(names) + " in the EHR: Handoff drafted no order here.")
    if "ServiceRequest" in kept and PRC_CONSULT in accepted_kinds(referral):
        todo.append(
            "Order the coach consult in the EHR: this EHR takes no referral order from apps "
            "(Handoff keeps it for the coach team)."
        )
    if referral.status == "failed":
        todo.append("The EHR refused the write: place the orders in the EHR yourself.")
    return todo


def queued_lines(referral: Any) -> list[str]:
    """What is still on its way to the chart, or kept in Handoff."""
    lines = []
    if referral.status == "queued":
        lines.append("Everything above is queued for the chart: Handoff retries until it lands.")
    if "Task" in [op.get("type") for op in referral.kept]:
        lines.append("The coach team's task is on their worklist in Handoff.")
    if referral.status == "held":
        lines.append("Kept in Handoff's referral log: nothing was written to the chart.")
    return lines


def summary(referral: Any) -> dict:
    """{"chart", "todo", "queued"}: the signed page's summary in words."""
    return {
        "chart": chart_lines(referral) if referral.status == "written" else [],
        "todo": todo_lines(referral),
        "queued": queued_lines(referral),
    }
