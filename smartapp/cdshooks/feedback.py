"""CDS Hooks feedback (`POST /cds-services/{id}/feedback`), without Flask: an accepted card is
the physician's decision as on the screen's Sign (the same signed decision, write plan, outbox
row and `decision` log event: `outbox.submit`, whose one row per visit makes the write-back and
the warm handoff happen exactly once whether the card, the app, or both are used); an
overridden card is the decline, with the pack's reason, logged (`cds-override`) and written
nowhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from smartapp.audit import log as referral_log
from smartapp.cdshooks import cards
from smartapp.cdshooks.clients import CdsClient
from smartapp.cdshooks.discovery import CdsSettings
from smartapp.cdshooks.models import Feedback, FeedbackItem, first_problem
from smartapp.cdshooks.service import OVERRIDE_EVENT, BadRequest, browser_id, decided
from smartapp.db import LaunchContext
from smartapp.launch import client as smart
from smartapp.screen import decisions as forms
from smartapp.screen.service import HELD_REASON, signed_decision, write_settings
from smartapp.writeback import outbox, profiles
from smartapp.writeback import resources as writeback
from smartapp.writeback.plan import WritePlan

if TYPE_CHECKING:
    from smartapp.services import Services

log = logging.getLogger("handoff.cdshooks.feedback")

#: The consult mode of a card's accept (the card asks for none): the screen's default.
CARD_CONSULT_MODE = forms.DEFAULT_CONSULT_MODE
TEXT_MAX = 500


@dataclass
class Outcome:
    """What the feedback came to: referrals to deliver now (new ones), and per card a word."""

    deliver: list[str] = field(default_factory=list)
    cards: dict[str, str] = field(default_factory=dict)


def apply(
    services: Services,
    settings: CdsSettings,
    client: CdsClient,
    service_id: str,
    body: Any,
    now: datetime | None = None,
) -> Outcome:
    """Apply every feedback item; BadRequest for a malformed body or a card not Handoff's."""
    now = now or datetime.now(UTC)
    try:
        feedback = Feedback.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(first_problem(exc)) from None
    outcome = Outcome()
    for item in feedback.feedback:
        context = _card_context(services, client, service_id, item.card)
        if item.outcome == "accepted":
            outcome.cards[item.card] = accept(services, settings, context, item, now, outcome)
        else:
            outcome.cards[item.card] = override(services, context, item)
    return outcome


def _card_context(
    services: Services, client: CdsClient, service_id: str, card_id: str
) -> LaunchContext:
    with services.db.session() as db:
        context = db.get(LaunchContext, card_id)
    shown = context.shown if context else None
    if (
        context is None
        or context.browser_id != browser_id(client)
        or not shown
        or shown.get("cds", {}).get("service") != service_id
    ):
        raise BadRequest(f"card {card_id}: not a card this service gave this client")
    return context


def accepted_kinds(context: LaunchContext, item: FeedbackItem) -> list[str]:
    shown = context.shown or {}
    by_uuid = {
        cards.suggestion_uuid(context.id, s["kind"]): s["kind"] for s in shown["suggestions"]
    }
    chosen = [s.id for s in item.acceptedSuggestions or []]
    unknown = [u for u in chosen if u not in by_uuid]
    if unknown or not chosen:
        raise BadRequest(f"card {item.card}: acceptedSuggestions must name its suggestions")
    return [by_uuid[u] for u in chosen]


def accept(
    services: Services,
    settings: CdsSettings,
    context: LaunchContext,
    item: FeedbackItem,
    now: datetime,
    outcome: Outcome,
) -> str:
    """The accepted suggestions as the signed decision (the others: no choice made)."""
    shown = context.shown or {}
    kinds_accepted = accepted_kinds(context, item)
    decisions = [writeback.ItemDecision(kind=k, accepted=True) for k in kinds_accepted]
    existing = outbox.for_visit(services.db, shown["cds"]["visit"])
    if existing is not None:
        return _after_signed(services, context, existing, kinds_accepted)
    signed = signed_decision(services, context, shown, decisions, CARD_CONSULT_MODE, None, now)
    plan = card_plan(services, context, signed, settings.screen.identifier_system)
    decision = forms.decision_record(shown, CARD_CONSULT_MODE, None, decisions)
    decision |= {"entry": "cds-hooks", "card": context.id}
    referral, created = outbox.submit(
        services.db,
        visit_key=shown["cds"]["visit"],
        context_id=context.id,
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        user_ref=context.user_ref,
        decision=decision,
        plan=plan,
    )
    if not created:  # signed in the app between our check and our submit
        return _after_signed(services, context, referral, kinds_accepted)
    if referral.status == "held":
        outbox.hold(services.db, referral.id, HELD_REASON)
    else:
        outcome.deliver.append(referral.id)
    return "signed"


def card_plan(
    services: Services, context: LaunchContext, signed: writeback.SignedReferral, system: str
) -> WritePlan:
    """The write plan as the screen's (`screen.service.write_plan`), with two differences: the
        drafts the card carried were placed by the EHR from the card (kept in Handoff, not written
        twice), and what may be written is what Handoff's backend access allows (the call's token is
    never kept); without backend access the writes wait for the next launch of the visit."""
    registration = services.registry.by_id(context.registration_id)
    if registration is None:
        raise BadRequest("the card's EHR registration is gone")
    write = registration.write
    plan = writeback.plan_writes(
        signed, write_settings(write, system), profiles.profile(write.profile)
    )
    if registration.backend is not None:  # what Handoff's backend access may create
        granted = " ".join(s.replace("system/", "patient/", 1) for s in registration.backend.scopes)
        plan.keep_in_handoff_unless(lambda t: smart.may(granted, t, "c"))
    on_card = (context.shown or {}).get("cds", {}).get("orders", [])
    taken = {
        writeback.referral_key(context.iss, context.encounter_id, context.patient_id, f"{k}-draft")
        for k in on_card
    } | {
        writeback.referral_key(context.iss, context.encounter_id, context.patient_id, k)
        for k in on_card
    }
    for op in plan.operations:
        if op.key in taken and op.type in ("MedicationRequest", "ServiceRequest"):
            op.keep_in_handoff()
    return plan


def _after_signed(services: Services, context: LaunchContext, referral, kinds: list[str]) -> str:
    """An accept on a visit already signed (in the app, or an earlier accept): nothing new is
    written; what the card asked that the signed decision does not have is logged."""
    signed = {d["kind"]: d for d in (referral.decision or {}).get("decisions", [])}
    not_sent = [k for k in kinds if not (signed.get(k) or {}).get("accepted")]
    with services.db.session() as db:
        referral_log.append_about(
            db,
            "sign-after-signed",
            context,
            data={
                "referral": referral.id,
                "signed_by": referral.user_ref,
                "entry": "cds-hooks",
                "card": context.id,
                "not_sent": [{"kind": k, "accepted": True} for k in not_sent],
            },
        )
    return "already-signed"


def override(services: Services, context: LaunchContext, item: FeedbackItem) -> str:
    """The card declined with a reason: each suggestion shown declined, logged, no write."""
    shown = context.shown or {}
    if decided(services, context.iss, context.patient_id, context.encounter_id):
        return "already-decided"
    reason = item.overrideReason.reason if item.overrideReason else None
    comment = (
        (item.overrideReason.userComment or "").strip()[:TEXT_MAX] if item.overrideReason else ""
    )
    label = None
    if reason is not None:
        labels = {r["code"]: r["label"] for s in shown["suggestions"] for r in s["decline_reasons"]}
        label = labels.get(reason.code)
        if label is None:
            raise BadRequest(f"card {item.card}: overrideReason {reason.code!r} is not offered")
    with services.db.session() as db:
        referral_log.append_about(
            db,
            OVERRIDE_EVENT,
            context,
            data={
                "card": context.id,
                "entry": "cds-hooks",
                "pack": shown["pack"],
                "decisions": [
                    {"kind": s["kind"], "accepted": False, "reason": label, "text": comment or None}
                    for s in shown["suggestions"]
                ],
                "at": item.outcomeTimestamp[:40],
            },
        )
    return "overridden"
