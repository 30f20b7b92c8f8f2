"""The physician's decisions: the Sign form as sent, checked against what was shown, and in
words. Pure: no Flask, no database; the view parses the request with `parse_form`, the
service (`screen.service.sign`) validates it with `read_decisions` and `consult_mode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smartapp.engine.kinds import OPT_OUT_KINDS, PRC_CONSULT
from smartapp.writeback.resources import CONSULT_MODES, ItemDecision

#: The consult mode when the form sends none.
DEFAULT_CONSULT_MODE = "in-person"
TEXT_MAX = 500
PROGRAM_TEXT_MAX = 200


@dataclass(frozen=True)
class KindChoice:
    """One suggestion's fields as sent (absent fields: None for the choice, else "")."""

    choice: str | None
    reason: str = ""
    text: str = ""


@dataclass(frozen=True)
class SignForm:
    """Everything the Sign form sent about the suggestions shown, before any check."""

    choices: Mapping[str, KindChoice]  # by suggestion kind, for each suggestion shown
    consult_mode: str | None  # None: the form sent no consult mode
    program: str = ""  # a catalog program id, stripped
    program_other: str = ""  # a program typed in, stripped and cut

    @property
    def mode(self) -> str:
        """The consult mode asked for (the default when none was sent)."""
        return DEFAULT_CONSULT_MODE if self.consult_mode is None else self.consult_mode


def parse_form(form: Mapping[str, str], shown: dict) -> SignForm:
    """The Sign form's fields for the suggestions that were shown (a request's form, or any
    mapping of field names to values)."""
    choices = {
        kind: KindChoice(
            choice=form.get(f"decision-{kind}"),
            reason=form.get(f"reason-{kind}", ""),
            text=form.get(f"reason-text-{kind}", ""),
        )
        for kind in (s["kind"] for s in shown["suggestions"])
    }
    return SignForm(
        choices=choices,
        consult_mode=form.get("consult-mode"),
        program=form.get("program", "").strip(),
        program_other=form.get("program-other", "").strip()[:PROGRAM_TEXT_MAX],
    )


def blank_choices(shown: dict) -> dict:
    """The form as first shown: opt-out suggestions accepted, the rest left to choose."""
    return {
        "decisions": {
            s["kind"]: {"choice": "accept" if s["kind"] in OPT_OUT_KINDS else None}
            for s in shown["suggestions"]
        },
        "consult_mode": "in-person",
    }


def form_choices(form: SignForm, shown: dict) -> dict:
    """Everything the physician put on the form, as sent (complete or not), so that an error
    page or an "already signed" page shows it back instead of the defaults."""
    decisions = {}
    for suggestion in shown["suggestions"]:
        kind = suggestion["kind"]
        sent = form.choices.get(kind) or KindChoice(None)
        decisions[kind] = {
            "choice": sent.choice if sent.choice in ("accept", "decline") else None,
            "reason": sent.reason,
            "text": sent.text[:TEXT_MAX],
        }
    return {
        "decisions": decisions,
        "consult_mode": form.consult_mode or "",
        "program": form.program,
        "program_other": form.program_other,
    }


def read_decisions(shown: dict, form: SignForm) -> tuple[list[ItemDecision], list[str]]:
    """The form's choices per suggestion; errors in words for anything missing."""
    decisions, errors = [], []
    for suggestion in shown["suggestions"]:
        kind = suggestion["kind"]
        sent = form.choices.get(kind) or KindChoice(None)
        if sent.choice not in ("accept", "decline"):
            errors.append(f"{suggestion['title']}: choose to accept or decline.")
            continue
        if sent.choice == "accept":
            decisions.append(ItemDecision(kind=kind, accepted=True))
            continue
        reason = next((r for r in suggestion["decline_reasons"] if r["code"] == sent.reason), None)
        text = sent.text.strip()[:TEXT_MAX] or None
        if reason is None:
            errors.append(f"{suggestion['title']}: pick a reason for declining.")
        elif reason["free_text"] and not text:
            errors.append(f"{suggestion['title']}: say why in a few words.")
        else:
            decisions.append(
                ItemDecision(
                    kind=kind, accepted=False, decline_reason=reason["label"], decline_text=text
                )
            )
    return decisions, errors


def consult_mode_error(form: SignForm) -> str | None:
    """The error for a consult mode Handoff does not know, else None."""
    return None if form.mode in CONSULT_MODES else "Choose how the coach consult happens."


def decision_record(shown: dict, mode: str, program: str | None, decisions: list) -> dict:
    """The signed decision as the outbox stores it (and the referral log records it)."""
    return {
        "pack": shown["pack"],
        "consult_mode": mode,
        "program": program,
        "shown": shown,
        "decisions": [
            {
                "kind": d.kind,
                "accepted": d.accepted,
                "reason": d.decline_reason,
                "text": d.decline_text,
            }
            for d in decisions
        ],
    }


def decided(referral: Any) -> dict:
    """The signed decisions by suggestion kind, for showing a visit that was already signed."""
    if referral is None:
        return {}
    return {d["kind"]: d for d in referral.decision.get("decisions", [])}


def as_decision(suggestion: dict, chosen: dict) -> dict:
    """A form choice in the shape of a signed decision (reason as its label), to compare with
    what was signed; `accepted` is None when nothing was chosen."""
    choice = chosen.get("choice")
    accepted = None if choice is None else {"accept": True, "decline": False}.get(choice)
    label = next(
        (r["label"] for r in suggestion["decline_reasons"] if r["code"] == chosen.get("reason")),
        None,
    )
    declined = accepted is False
    return {
        "kind": suggestion["kind"],
        "accepted": accepted,
        "reason": label if declined else None,
        "text": ((chosen.get("text") or "").strip()[:TEXT_MAX] or None) if declined else None,
    }


def decision_words(title: str, decision: dict | None) -> str:
    """One decision in plain words, e.g. "Naloxone kit: declined (Patient declined: ...)"."""
    if decision is None or decision.get("accepted") is None:
        return f"{title}: no choice made"
    if decision["accepted"]:
        return f"{title}: accepted"
    why = ": ".join(x for x in (decision.get("reason"), decision.get("text")) if x)
    return f"{title}: declined ({why or 'no reason given'})"


def consult_words(mode: str | None, program: str | None) -> str:
    return f"Coach consult: {(mode or 'not chosen').replace('-', ' ')}" + (
        f", program: {program}" if program else ""
    )


def signed_words(referral: Any) -> dict:
    """Who signed the visit and when, in words for the page."""
    created = referral.created_at
    name = ((referral.decision or {}).get("shown") or {}).get("signer_name")
    return {
        # the physician's name as read at launch; the Practitioner reference only for a
        # visit signed before Handoff kept the name
        "by": name or referral.user_ref or "an unknown user",
        "at": created.strftime("%Y-%m-%d %H:%M UTC") if created else "an unknown time",
    }


def unsent_choices(shown: dict, choices: dict, referral: Any, program: str | None) -> list[dict]:
    """The choices of this window that differ from what was signed for the visit: none of them
    was sent, so each must be shown to the physician."""
    written = decided(referral)
    differing = []
    for suggestion in shown["suggestions"]:
        mine = as_decision(suggestion, choices["decisions"].get(suggestion["kind"], {}))
        theirs = written.get(suggestion["kind"])
        if theirs is None or mine != {k: theirs.get(k) for k in mine}:
            differing.append(mine | {"words": decision_words(suggestion["title"], mine)})
    signed_decision = referral.decision
    prc = written.get(PRC_CONSULT)
    mine_prc = choices["decisions"].get(PRC_CONSULT, {}).get("choice") == "accept"
    if mine_prc and prc and prc.get("accepted"):
        mine_consult = (choices["consult_mode"] or None, program)
        theirs_consult = (signed_decision.get("consult_mode"), signed_decision.get("program"))
        if mine_consult != theirs_consult:
            differing.append(
                {"kind": "consult", "mode": mine_consult[0], "program": mine_consult[1]}
                | {"words": consult_words(*mine_consult)}
            )
    return differing


def written_words(referral: Any, shown: dict) -> list[str]:
    """What was signed for the visit, one line per decision (and the consult), in words."""
    titles = {s["kind"]: s["title"] for s in shown["suggestions"]}
    written = [
        decision_words(titles.get(d["kind"], d["kind"]), d)
        for d in referral.decision.get("decisions", [])
    ]
    if (decided(referral).get(PRC_CONSULT) or {}).get("accepted"):
        written.append(
            consult_words(referral.decision.get("consult_mode"), referral.decision.get("program"))
        )
    return written


def is_writing(referral: Any, now: datetime | None = None) -> bool:
    """Whether a delivery holds the referral's lease now (a write is under way)."""
    until = referral.lease_until
    if referral.status != "queued" or until is None:
        return False
    if until.tzinfo is None:  # SQLite gives naive UTC datetimes back
        until = until.replace(tzinfo=UTC)
    return until > (now or datetime.now(UTC))
