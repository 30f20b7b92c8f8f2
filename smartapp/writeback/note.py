"""The linkage note's text, written for a human reader (shared spec writeback.md)."""

from __future__ import annotations

from smartapp.engine import kinds
from smartapp.writeback.referral import (
    CONSULT_MODES,
    ItemDecision,
    ShownSuggestion,
    SignedReferral,
    decision_for,
)


def note_text(referral: SignedReferral) -> str:
    """The linkage note: each suggestion, why, its evidence and the physician's decision."""
    lines = [
        "Handoff: emergency department substance use linkage note",
        f"Signed {referral.signed_at.strftime('%Y-%m-%d %H:%M UTC')}"
        + (f" by {referral.user_name}" if referral.user_name else ""),
        "",
    ]
    amends = referral.extra.get("amends")  # an amendment after Sign: what it changes and why
    if amends:
        lines += [f"Amendment: {amends}", ""]
    if not referral.shown:
        lines.append("No suggestion was made for this visit.")
    for shown in referral.shown:
        lines += _suggestion_lines(referral, shown, decision_for(referral, shown.kind))
    lines += _dsm5_lines(referral.extra.get("dsm5"))
    lines.append(
        f"Suggestions by rule pack {referral.pack_id} {referral.pack_version}. "
        "Suggestions are advice; the physician decided."
    )
    lines.append(
        "This note holds substance use disorder information protected by federal "
        "confidentiality rules; do not redisclose without consent."
    )
    return "\n".join(lines) + "\n"


def _suggestion_lines(
    referral: SignedReferral, shown: ShownSuggestion, decision: ItemDecision | None
) -> list[str]:
    lines = [f"* {shown.title}", f"  Why: {shown.reason}"]
    if shown.variant:
        lines.append(f"  Variant: {shown.variant.replace('-', ' ')}")
    if shown.cautions:
        lines.append(f"  Cautions: {', '.join(shown.cautions)}")
    if shown.evidence_words:
        lines.append("  Evidence: " + "; ".join(shown.evidence_words))
    lines.append(_decision_line(decision))
    if shown.kind == kinds.PRC_CONSULT and (decision is None or decision.accepted):
        lines.append(
            f"  Coach referral: peer recovery coach consult "
            f"{CONSULT_MODES.get(referral.consult_mode, referral.consult_mode)}; "
            "warm handoff to the coach team."
        )
        lines.append(f"  Community program for the handoff: {referral.program or 'not chosen'}")
    lines.append("")
    return lines


def _decision_line(decision: ItemDecision | None) -> str:
    if decision is None or decision.accepted:
        return "  Decision: accepted (the patient did not decline)"
    reason = decision.decline_reason or "no reason given"
    if decision.decline_text:
        reason += f" ({decision.decline_text})"
    return f"  Decision: declined: {reason}"


def _dsm5_lines(dsm5: dict | None) -> list[str]:
    """The DSM-5 OUD checklist recorded this visit (smartapp.aids: `extra["dsm5"]`), if any."""
    if not dsm5:
        return []
    lines = [f"* DSM-5 OUD checklist: {dsm5['summary']} (recorded {dsm5.get('at', '')})"]
    if dsm5.get("met"):
        lines.append("  Criteria met: " + " ".join(dsm5["met"]))
    return [*lines, ""]
