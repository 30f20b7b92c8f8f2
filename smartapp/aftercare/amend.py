"""Amend after Sign: the physician records that the patient changed their mind, or that a
choice on the signed screen was wrong, about the peer recovery coach referral. Flask-free.

History is never edited: the signed decision and its `decision` event stay as they are.
An amendment either
- revokes the standing coach referral: the handoff is closed through the lifecycle
  (`handoffs.service.record_in`, the physician as who acted), so the outbox cancels the Task,
  revokes the ServiceRequest and writes a Provenance naming the physician; or
- places a new coach referral after a decline (or after a revoke): a referral of its own,
  with identifiers of its own (`extra["amendment"]`), through the same write-back path as Sign
  (`screen.service.write_plan`, `outbox.submit_in`), exactly once;
and is logged as `decision-amended` {referral, new_referral, kind, from, to, reason, why,
actor_kind} naming the physician. One unit of work per amendment, under a lock on the signed
referral's row, and checked against the state the form was based on (`based_on`), so a double
submit or two windows amend once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import CoachHandoff, LaunchContext, Referral
from smartapp.engine import kinds
from smartapp.handoffs import lifecycle
from smartapp.handoffs import service as handoffs
from smartapp.screen import decisions as forms
from smartapp.screen import service as screen
from smartapp.writeback import outbox
from smartapp.writeback import resources as writeback
from smartapp.writeback.actor import Actor

if TYPE_CHECKING:
    from smartapp.services import Services

log = logging.getLogger("handoff.aftercare")

Action = Literal["revoke", "place"]
#: Why the physician amends (workflow words, not clinical text): the lifecycle's close reason
#: each maps to, and whether a few words of explanation are required.
REASONS: dict[str, dict] = {
    "changed-mind": {
        "label": "The patient changed their mind",
        "close_reason": "Patient declined the coach",
        "text_required": False,
    },
    "wrong-choice": {
        "label": "The choice recorded at Sign was wrong",
        "close_reason": "Other",
        "text_required": True,
    },
}
TEXT_MAX = 500
#: Amendments a visit may have (each placed referral has a visit key of its own).
MAX_AMENDMENTS = 20
CLOSED = ("cancelled", "rejected")


class AmendError(ValueError):
    """An amendment that cannot be made (nothing signed, no coach suggested); says why."""


@dataclass(frozen=True)
class AmendForm:
    """The amend form as sent (stripped; checked by `check`)."""

    action: str
    reason: str
    text: str = ""
    based_on: str = ""
    consult_mode: str = forms.DEFAULT_CONSULT_MODE
    program: str = ""  # a catalog program id
    program_other: str = ""


@dataclass(frozen=True)
class CoachState:
    """Where the visit's coach referral stands after Sign and every amendment since."""

    original: Referral  # the referral signed for the visit
    placed: tuple[Referral, ...]  # referrals placed by amendments, oldest first
    standing: Referral | None  # the coach referral that stands now (None: none does)
    suggested: bool  # whether a coach consult was suggested at all (something to place)
    version: str  # a digest of the above: what an amend form was based on

    @property
    def on(self) -> bool:
        return self.standing is not None

    @property
    def next_number(self) -> int:
        return len(self.placed) + 1


@dataclass
class AmendResult:
    """`outcome`: ``amended`` (`referral`: the referral to deliver now), ``invalid``
    (`errors`), ``stale`` (the visit was amended meanwhile: a double submit or another
    window; nothing done)."""

    outcome: Literal["amended", "invalid", "stale"]
    referral: Referral | None = None
    errors: list[str] = field(default_factory=list)


# -- the state ----------------------------------------------------------------------------


def amendment_key(context: LaunchContext, number: int) -> str:
    """The visit key of the referral placed by the visit's `number`th amendment."""
    return writeback.referral_key(
        context.iss, context.encounter_id, context.patient_id, f"visit|amendment-{number}"
    )


def accepted_coach(referral: Referral) -> bool:
    return handoffs.is_handoff(referral)


def _standing(session: Session, referrals: list[Referral]) -> Referral | None:
    """The newest referral with an accepted coach consult whose handoff is not closed as
    cancelled or rejected."""
    for referral in reversed(referrals):
        if not accepted_coach(referral):
            continue
        row = session.get(CoachHandoff, referral.id)
        if row is None or row.status not in CLOSED:
            return referral
    return None


def state_in(session: Session, context: LaunchContext, original: Referral) -> CoachState:
    """The coach referral's state, read in the caller's unit of work."""
    placed = []
    for number in range(1, MAX_AMENDMENTS + 1):
        found = session.scalar(
            select(Referral).where(Referral.visit_key == amendment_key(context, number))
        )
        if found is None:
            break
        placed.append(found)
    every = [original, *placed]
    standing = _standing(session, every)
    statuses = [f"{r.id}:{getattr(session.get(CoachHandoff, r.id), 'status', '-')}" for r in every]
    digest = hashlib.sha256("|".join(statuses).encode()).hexdigest()[:16]
    shown = original.decision.get("shown") or {}
    suggested = any(s.get("kind") == kinds.PRC_CONSULT for s in shown.get("suggestions", []))
    return CoachState(original, tuple(placed), standing, suggested, digest)


def state(services: Services, context: LaunchContext) -> CoachState | None:
    """The visit's coach referral state (None: the visit is not signed yet)."""
    original = screen.signed_referral(services, context)
    if original is None:
        return None
    with services.db.session() as session:
        return state_in(session, context, original)


def physician(context: LaunchContext, original: Referral) -> Actor:
    """The launching physician as who acted (name as read at the launch's screen)."""
    shown = original.decision.get("shown") or {}
    name = (context.shown or {}).get("signer_name") or shown.get("signer_name") or "ED physician"
    return Actor("physician", name, context.user_ref)


# -- the form -----------------------------------------------------------------------------


def check(form: AmendForm, current: CoachState) -> list[str]:
    """What is wrong with the form, in words (empty: nothing)."""
    errors = []
    reason = REASONS.get(form.reason)
    if form.action not in ("revoke", "place"):
        errors.append("Choose what to amend.")
    if reason is None:
        errors.append("Say why: the patient changed their mind, or the choice was wrong.")
    elif reason["text_required"] and not form.text:
        errors.append("Say in a few words what was wrong.")
    if form.action == "place":
        if not current.suggested:
            errors.append("No coach consult was suggested for this visit: nothing to place.")
        if forms.consult_mode_error(forms.SignForm({}, form.consult_mode)):
            errors.append("Choose how the coach consult happens.")
    return errors


def program_words(services: Services, form: AmendForm) -> str | None:
    """The chosen program as the referral names it ("name (phone)"), or the typed words."""
    catalog = services.catalog
    label = catalog.label(form.program) if form.program and catalog is not None else None
    return label or form.program_other[: forms.PROGRAM_TEXT_MAX] or None


# -- amend --------------------------------------------------------------------------------


def amend(
    services: Services,
    context: LaunchContext,
    form: AmendForm,
    identifier_system: str,
    now: datetime,
) -> AmendResult:
    """Make the amendment the form asks for, once (see the module's docstring). Raises
    AmendError when the visit is not signed."""
    original = screen.signed_referral(services, context)
    if original is None:
        raise AmendError("Sign the visit first; an amendment changes what was signed.")
    actor = physician(context, original)
    try:
        target = _amend_once(services, context, original, form, actor, identifier_system, now)
    except lifecycle.LifecycleError as exc:  # e.g. the coach closed the handoff meanwhile
        return AmendResult("invalid", errors=[str(exc)])
    if isinstance(target, AmendResult):
        return target
    if form.action == "place" and target.status == "held":
        outbox.hold(services.db, target.id, screen.HELD_REASON)  # as Sign does: said, logged
    return AmendResult("amended", referral=target)


def _amend_once(
    services: Services,
    context: LaunchContext,
    original: Referral,
    form: AmendForm,
    actor: Actor,
    identifier_system: str,
    now: datetime,
) -> Referral | AmendResult:
    """The amendment in one unit of work under the lock: the referral it wrote to, or why
    nothing was done."""
    with services.db.session() as session:
        _lock(session, original.id, now)
        current = state_in(session, context, original)
        if form.based_on != current.version or _no_change(form, current):
            log.info("amend not repeated: the visit changed since the form was shown")
            return AmendResult("stale", referral=current.standing)
        errors = check(form, current)
        if errors:
            return AmendResult("invalid", errors=errors)
        if form.action == "revoke":
            target = _revoke(session, current, form, actor, now)
        else:
            target = _place(services, session, context, current, form, identifier_system, now)
        _log(session, original, current, target, form, actor)
    return target


def _no_change(form: AmendForm, current: CoachState) -> bool:
    """Revoking with nothing standing, or placing with a referral standing: a repeat."""
    return (form.action == "revoke") != current.on


def _lock(session: Session, referral_id: str, now: datetime) -> None:
    """Take the signed referral's row before reading anything (SQLite's write lock,
    PostgreSQL's row lock), so two amendments of one visit run one after the other."""
    session.execute(update(Referral).where(Referral.id == referral_id).values(updated_at=now))


def _why(form: AmendForm) -> str:
    label = REASONS[form.reason]["label"]
    return label + (f": {form.text}" if form.text else "")


def _revoke(
    session: Session, current: CoachState, form: AmendForm, actor: Actor, now: datetime
) -> Referral:
    """Close the standing handoff as cancelled: the Task cancelled, the ServiceRequest
    revoked, a Provenance naming the physician (queued in the outbox in this unit of work)."""
    standing = current.standing
    assert standing is not None  # checked by the caller (_no_change)
    words = f": {form.text}" if form.text else ""
    reason = REASONS[form.reason]["close_reason"]
    change = lifecycle.close(reason, f"Amended by the physician{words}")
    handoffs.record_in(session, standing.id, change, actor, now=now)
    return standing


def _place(
    services: Services,
    session: Session,
    context: LaunchContext,
    current: CoachState,
    form: AmendForm,
    identifier_system: str,
    now: datetime,
) -> Referral:
    """A new coach referral: the coach consult as it was shown at Sign, now accepted, with
    identifiers of its own; stored with its write plan in this unit of work."""
    original = current.original
    shown = dict(original.decision.get("shown") or {})
    shown["suggestions"] = [s for s in shown["suggestions"] if s["kind"] == kinds.PRC_CONSULT]
    decisions = [writeback.ItemDecision(kind=kinds.PRC_CONSULT, accepted=True)]
    program = program_words(services, form)
    signed = screen.signed_decision(
        services, context, shown, decisions, form.consult_mode, program, now
    )
    number = current.next_number
    signed = dataclasses.replace(
        signed,
        extra={
            "amendment": number,
            "amends": f"the coach consult declined or revoked after Sign is now accepted "
            f"({_why(form)}).",
        },
    )
    plan = screen.write_plan(services, context, signed, identifier_system)
    record = forms.decision_record(shown, form.consult_mode, program, decisions)
    record["amends"] = {"referral": original.id, "number": number, "why": _why(form)}
    return outbox.submit_in(
        session,
        visit_key=amendment_key(context, number),
        context_id=context.id,
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        user_ref=context.user_ref,
        decision=record,
        plan=plan,
    )


def _log(
    session: Session,
    original: Referral,
    current: CoachState,
    target: Referral,
    form: AmendForm,
    actor: Actor,
) -> None:
    """The amendment in the referral log: who, what, why (the original decision stays)."""
    revoke = form.action == "revoke"
    referral_log.append_by(
        session,
        "decision-amended",
        original,
        actor,
        {
            "referral": original.id,
            "amended_referral": target.id if revoke else None,
            "new_referral": None if revoke else target.id,
            "kind": kinds.PRC_CONSULT,
            "from": "accepted" if revoke else "declined",
            "to": "declined" if revoke else "accepted",
            "reason": form.reason,
            "why": _why(form),
        },
    )
    log.info("decision amended: referral=%s action=%s", original.id[:8], form.action)
