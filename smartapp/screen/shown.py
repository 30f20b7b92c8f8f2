"""What the physician sees, described from the engine's result: suggestions with their
evidence in words, withheld suggestions with the reason in words, notices. Pure: the decision
is the engine's (what it suggests, withholds or cautions is shown, never changed, here) and the
label is `engine.labels`'; this only puts them in the physician's words.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smartapp.engine import Chart, Evaluation, Notice, Pack, Suggestion, Withheld
from smartapp.engine.labels import is_opioid
from smartapp.fhir.client import CHART_TYPES
from smartapp.handoffs.contact import contact_details
from smartapp.launch import client as smart
from smartapp.screen.describe import demographics, describe, in_words, patient_banner
from smartapp.screen.explained import Explainer, withheld_lines
from smartapp.writeback import profiles

# The engine's notices and withheld reasons in the physician's words.
NOTICE_WORDS = {
    "not-current-ed-visit": "This encounter is not an ED visit in progress: the suggestions "
    "are for it all the same. Check that it is the visit you mean.",
    "deceased": "The chart records this patient as deceased: nothing is suggested.",
}
WITHHELD_WORDS = {
    "deceased": "the patient is recorded as deceased",
    "already-referred": "a coach referral is already placed for this visit",
    "under-age": "the patient is under the age the rules set",
    "on-moud": "the patient is already on medication for OUD",
    "allergy": "the chart records a buprenorphine allergy",
    "has-naloxone": "a naloxone kit was already prescribed or dispensed",
}


def readable_types(scope: str) -> tuple[tuple[str, ...], list[str]]:
    """The chart types the granted scopes let Handoff read, and those they do not."""
    wanted = ("Patient", "Observation", *CHART_TYPES)
    allowed = tuple(t for t in wanted if smart.may(scope, t, "r" if t == "Patient" else "s"))
    return allowed, [t for t in wanted if t not in allowed]


def missing_write_scopes(scope: str, registration: Any) -> list[str]:
    """The resource types the EHR's write profile needs but the granted scopes do not allow."""
    needed = profiles.profile(registration.write.profile).rest_types - {"MedicationRequest"}
    return sorted(t for t in needed if not smart.may(scope, t, "c"))


def cannot_write_notice(missing_writes: list[str]) -> str:
    """The notice shown when the granted scopes allow no write of these types."""
    return (
        "Handoff can suggest but cannot write to this chart: the EHR did not grant "
        "it write access to " + ", ".join(missing_writes) + ". A signed decision "
        "is kept in Handoff's referral log only."
    )


def notice_text(notice: Notice) -> str:
    """An engine notice as the sentence the physician reads."""
    if notice.unread:
        return (
            "The EHR did not let Handoff read: "
            + ", ".join(notice.unread)
            + ". Suggestions may be incomplete; ask about methadone, buprenorphine, "
            "naltrexone and allergies before starting buprenorphine."
        )
    return NOTICE_WORDS.get(notice.code, notice.code)


def describe_suggestion(
    suggestion: Suggestion, chart: Chart, explainer: Explainer | None = None
) -> dict:
    """A suggestion as shown: its words, cautions, decline reasons and evidence in words
    (`words`: for the note; `says`: as the screen shows it, with the values, where an
    `explainer` of the evaluation is given)."""
    evidence = [describe(chart.get(ref), ref) for ref in suggestion.evidence]
    for item in evidence:
        item["words"] = in_words(item)
        if explainer is not None:
            item["says"] = explainer.item(item["reference"])["says"]
    explained = explainer.suggestion(suggestion) if explainer is not None else {}
    return explained | {
        "kind": suggestion.kind,
        "title": suggestion.title,
        "reason": suggestion.reason,
        "variant": suggestion.variant,
        "cautions": list(suggestion.cautions),
        "evidence": evidence,
        "rule": suggestion.rule,
        "decline_reasons": [
            {"code": r.code, "label": r.label, "free_text": r.free_text}
            for r in suggestion.decline_reasons
        ],
    }


def describe_withheld(withheld: Withheld, explainer: Explainer | None = None) -> dict:
    """A withheld suggestion as shown: the first reason in words, every reason by code (and,
    with an `explainer` of the evaluation, in words with its evidence)."""
    explained = explainer.withheld(withheld) if explainer is not None else {}
    return explained | {
        "kind": withheld.kind,
        "reason": withheld.reason,
        "reasons": [b.reason for b in withheld.reasons],
        "words": WITHHELD_WORDS.get(withheld.reason, withheld.reason),
        "evidence": list(withheld.evidence),
    }


def describe_evaluation(
    evaluation: Evaluation,
    chart: Chart,
    pack: Pack,
    now: datetime,
    notices: list[str],
    patient_id: str,
    missing_writes: list[str],
) -> dict:
    """Everything the screen shows (and the referral log records) for one evaluation.
    `notices`: what could not be read or was cut, before the engine's own notices."""
    explainer = Explainer(chart, pack, now, evaluation)
    suggestions = [describe_suggestion(s, chart, explainer) for s in evaluation.suggestions]
    withheld = [describe_withheld(w, explainer) for w in evaluation.withheld]
    notices = notices + [notice_text(n) for n in evaluation.notices]
    if missing_writes:
        notices.append(cannot_write_notice(missing_writes))
    patient = evaluation.patient or chart.get(f"Patient/{patient_id}") or {}
    encounter = evaluation.encounter or {}
    return {
        "evaluated_at": now.isoformat(),
        "pack": {"id": pack.id, "version": pack.version, "hash": pack.content_hash},
        "patient": patient_banner(patient),
        "demographics": demographics(patient, now),
        "encounter": {"id": encounter.get("id"), "start": encounter.get("period", {}).get("start")},
        # For the coach's worklist (not the physician's screen, not the suggestions-shown log).
        "contact": contact_details(patient, encounter),
        "suggestions": suggestions,
        "withheld": withheld,
        "withheld_lines": withheld_lines(withheld),
        "summary": explainer.summary(suggestions),
        "opioid": is_opioid(s["kind"] for s in suggestions),
        "notices": notices,
        "notice_codes": [n.code for n in evaluation.notices],
        "can_write": not missing_writes,
    }


def shown_log_data(shown: dict) -> dict:
    """What the referral log records of the suggestions shown: codes and references, no PHI
    beyond the equity categories."""
    return {
        "pack": shown["pack"],
        "demographics": shown.get("demographics"),
        "encounter_start": shown["encounter"].get("start"),
        "notices": shown["notices"],  # what could not be read or was cut: no PHI
        "suggestions": [
            {k: s[k] for k in ("kind", "variant", "cautions", "rule")}
            | {"evidence": [e["reference"] for e in s["evidence"]]}
            for s in shown["suggestions"]
        ],
        "withheld": [
            {k: w[k] for k in ("kind", "reason", "reasons", "evidence")}
            for w in shown.get("withheld", [])
        ],
        "notice_codes": list(shown.get("notice_codes", [])),
    }
