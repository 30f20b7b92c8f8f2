"""The warm handoff's lifecycle (pure): the states a handoff's FHIR Task moves through, the
changes coaches, supervisors, community partners and Handoff itself may make, and why a change
is refused. No database, no Flask: `apply` takes a state and a change and returns the next
state or raises `LifecycleError` saying why not (the caller shows the message as it is).

Task `status`: requested -> accepted (owner: the coach) -> in-progress -> completed; or
rejected / cancelled with a reason. `business_status` steps between (`BUSINESS_STEPS`, in
order): contacted, appointment-scheduled, appointment-attended, engaged-30-days; a step never
goes back, and a completed handoff may still step on (engaged at 30 days comes after the
first appointment completed it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from smartapp.writeback import business_status
from smartapp.writeback.actor import Actor

OPEN = ("requested", "accepted", "in-progress")
CLOSED = ("completed", "rejected", "cancelled")
STATUSES = OPEN + CLOSED
# The steps between accepted and completed, in order (Handoff's own: the spec names none);
# their words (businessStatus.text) come from catalog/lifecycle.yaml, a site's data.
BUSINESS_STEPS = business_status.STEPS
BUSINESS_WORDS = business_status.steps().words()
CLOSE_REASONS = (
    "Linked to a program",
    "Patient declined the coach",
    "Patient left before contact",
    "Could not reach the patient",
    "Admitted or transferred",
    "Other",
)
# Contact attempts: the result, and whether a note is required (what was agreed with the
# patient, or why they declined); "no answer" needs none.
CONTACT_RESULTS = ("reached", "no-answer", "declined")
CONTACT_WORDS = {"reached": "Reached", "no-answer": "No answer", "declined": "Declined"}
NOTE_REQUIRED = {"reached": True, "no-answer": False, "declined": True}

Action = Literal["accept", "reassign", "contact", "link", "close", "update"]
ACTIONS: tuple[Action, ...] = ("accept", "reassign", "contact", "link", "close", "update")
# Who may make which change (the row's owner is checked besides, in `_may`).
ALLOWED: dict[str, tuple[Action, ...]] = {
    "coach": ("accept", "reassign", "contact", "link", "close", "update"),
    "supervisor": ("reassign", "close", "update"),
    "partner": ("update",),
    "system": ("update", "close"),
    # The physician amends a signed decision (smartapp.aftercare.amend): the referral revoked.
    "physician": ("close",),
}
# The statuses a partner may report (accepted: the program took the referral; rejected: it
# turned it down, with a reason; completed: the patient reached the program).
PARTNER_STATUSES = ("accepted", "in-progress", "completed", "rejected")


class LifecycleError(ValueError):
    """A change that does not fit the handoff's state or the actor's role; says why."""


@dataclass(frozen=True)
class Change:
    """One change to a handoff. `action` names it (the log event follows from it); the other
    fields are what it sets. `owner` is the new owner (accept: the coach; reassign: the coach
    it goes to; a partner's accept: the partner Organization). `at` is when it happened where
    it is reported later (a partner's "attended yesterday"); else now."""

    action: Action
    status: str | None = None
    business_status: str | None = None
    reason: str | None = None
    program: str | None = None  # the program in words (catalog name and phone, or typed)
    program_id: str | None = None  # the catalog program's id, where it is one
    partner: str | None = None  # the partner's id (partners.yaml), for partner changes
    note: str | None = None
    owner: Actor | None = None
    output: str | None = None  # a reference (Appointment/..) or text showing the outcome
    result: str | None = None  # a contact attempt's result: CONTACT_RESULTS
    at: datetime | None = None


@dataclass(frozen=True)
class HandoffState:
    """The handoff as Handoff keeps it (a copy of the `coach_handoff` row)."""

    referral_id: str
    status: str = "requested"
    business_status: str | None = None
    owner_ref: str | None = None
    owner_name: str | None = None
    owner_kind: str | None = None
    accepted_at: datetime | None = None
    contacted_at: datetime | None = None
    contact_note: str | None = None
    contact_result: str | None = None
    attempts: int = 0
    linked_program: str | None = None
    linked_program_id: str | None = None
    linked_at: datetime | None = None
    closed_reason: str | None = None
    partner: str | None = None
    output: str | None = None
    updated_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def owner(self) -> Actor | None:
        if not self.owner_ref and not self.owner_name:
            return None
        kind = self.owner_kind if self.owner_kind in ("coach", "partner") else "coach"
        return Actor(kind, self.owner_name or "", self.owner_ref)  # type: ignore[arg-type]


# -- constructors for the usual changes ------------------------------------------------------


def accept() -> Change:
    return Change("accept", status="accepted")


def reassign(to: Actor, note: str | None = None) -> Change:
    return Change("reassign", owner=to, note=note)


def contact(result: str, note: str | None = None) -> Change:
    return Change("contact", result=result, note=note)


def link(program: str, program_id: str | None = None) -> Change:
    return Change("link", status="completed", program=program, program_id=program_id)


def close(reason: str, note: str | None = None) -> Change:
    return Change("close", reason=reason, note=note)


# -- the rules ----------------------------------------------------------------------------


def apply(state: HandoffState, change: Change, actor: Actor, now: datetime) -> HandoffState:
    """The state after `change` by `actor` (at `change.at` or `now`), or LifecycleError."""
    if change.action not in ACTIONS:
        raise LifecycleError(f"Unknown action {change.action!r}.")
    _may(state, change, actor)
    when = change.at or now
    step = {
        "accept": _accept,
        "reassign": _reassign,
        "contact": _contact,
        "link": _link,
        "close": _close,
        "update": _update,
    }[change.action]
    return replace(step(state, change, actor, when), updated_at=when)


def _may(state: HandoffState, change: Change, actor: Actor) -> None:
    """Refuse a change the actor's role does not make, or a coach's on another's handoff."""
    if change.action not in ALLOWED.get(actor.kind, ()):
        raise LifecycleError(f"A {actor.kind} cannot {change.action} a handoff.")
    late_step = change.action == "update" and _is_late_step(state, change)
    if state.status in CLOSED and not late_step:
        raise LifecycleError("This handoff is closed.")
    if actor.kind == "partner" and not change.partner:
        raise LifecycleError("A partner's change must name the partner.")
    if actor.kind != "coach" or change.action == "accept":
        return
    if state.status == "requested":
        if change.action == "close":
            return  # a coach may close a handoff nobody accepted (patient left)
        raise LifecycleError("Accept the handoff first.")
    if state.owner_ref != actor.reference:
        raise LifecycleError(f"This handoff belongs to {state.owner_name}.")


def _is_late_step(state: HandoffState, change: Change) -> bool:
    """A business step reported after completion (engaged at 30 days), nothing else."""
    return (
        state.status == "completed"
        and change.business_status is not None
        and change.status in (None, "completed")
    )


def _accept(state: HandoffState, change: Change, actor: Actor, when: datetime) -> HandoffState:
    if state.status != "requested":
        raise LifecycleError(f"Already accepted by {state.owner_name}.")
    return replace(
        state,
        status="accepted",
        accepted_at=when,
        owner_ref=actor.reference,
        owner_name=actor.display,
        owner_kind="coach",
    )


def _reassign(state: HandoffState, change: Change, actor: Actor, when: datetime) -> HandoffState:
    to = change.owner
    if to is None or to.kind != "coach" or not to.reference:
        raise LifecycleError("Name the coach to hand this over to.")
    if to.reference == state.owner_ref:
        raise LifecycleError(f"This handoff already belongs to {to.display}.")
    status = "accepted" if state.status == "requested" else state.status
    return replace(
        state,
        status=status,
        accepted_at=state.accepted_at or when,
        owner_ref=to.reference,
        owner_name=to.display,
        owner_kind="coach",
    )


def _contact(state: HandoffState, change: Change, actor: Actor, when: datetime) -> HandoffState:
    result = change.result
    if result not in CONTACT_RESULTS:
        raise LifecycleError("Say how the attempt went: reached, no answer or declined.")
    note = clean(change.note, 1000)
    if NOTE_REQUIRED[result] and not note:
        raise LifecycleError(
            f"A note is needed when the patient was {CONTACT_WORDS[result].lower()}: "
            "say what was agreed or why not."
        )
    state = replace(state, attempts=state.attempts + 1, contact_result=result)
    if note:
        state = replace(state, contact_note=note)
    if result == "no-answer":
        return state
    return replace(
        state,
        status="in-progress",
        contacted_at=state.contacted_at or when,
        business_status=state.business_status or "contacted",
    )


def _link(state: HandoffState, change: Change, actor: Actor, when: datetime) -> HandoffState:
    program = clean(change.program, 300)
    if not program:
        raise LifecycleError("Name the program the patient was linked to.")
    return replace(
        state,
        status="completed",
        linked_program=program,
        linked_program_id=change.program_id,
        linked_at=when,
        output=change.output or state.output,
    )


def _close(state: HandoffState, change: Change, actor: Actor, when: datetime) -> HandoffState:
    if change.reason not in CLOSE_REASONS:
        raise LifecycleError("Pick a reason for closing.")
    note = clean(change.note, 500)
    reason = change.reason + (f": {note}" if note else "")
    status = "completed" if change.reason == "Linked to a program" else "cancelled"
    return replace(state, status=status, closed_reason=reason)


def _update(state: HandoffState, change: Change, actor: Actor, when: datetime) -> HandoffState:
    """A status or business step reported by a partner, a supervisor, a coach or Handoff."""
    if change.status is None and change.business_status is None:
        raise LifecycleError("Say what changed: a status or a step.")
    status = _next_status(state, change, actor)
    business = _next_step(state, change.business_status)
    reason = clean(change.reason, 500)
    if status in ("rejected", "cancelled") and not reason:
        raise LifecycleError(f"Say why the referral is {status}.")
    new = replace(
        state,
        status=status,
        business_status=business,
        closed_reason=reason if status in ("rejected", "cancelled") else state.closed_reason,
        partner=change.partner or state.partner,
        output=change.output or state.output,
    )
    if business == "contacted" and state.contacted_at is None:
        new = replace(new, contacted_at=when)
    if status == "accepted" and state.status == "requested":
        new = _owner_on_accept(new, change, actor, when)
    return new


def _next_status(state: HandoffState, change: Change, actor: Actor) -> str:
    """The status after an update: never back (a partner's late "accepted" on a handoff the
    coach has in progress keeps it in progress); a step implies at least in-progress."""
    wanted = change.status
    if wanted is None:
        if change.business_status and state.status in ("requested", "accepted"):
            return "in-progress"
        return state.status
    if wanted not in STATUSES:
        raise LifecycleError(f"Unknown status {wanted!r}.")
    if actor.kind == "partner" and wanted not in PARTNER_STATUSES:
        raise LifecycleError(f"A partner cannot set the status {wanted!r}.")
    if wanted == state.status or wanted in CLOSED:
        return wanted
    if OPEN.index(wanted) < OPEN.index(state.status):
        if actor.kind == "partner":
            return state.status
        raise LifecycleError(f"The handoff is already {state.status}.")
    return wanted


def _next_step(state: HandoffState, step: str | None) -> str | None:
    if step is None:
        return state.business_status
    if step not in BUSINESS_STEPS:
        raise LifecycleError(f"Unknown step {step!r}.")
    current = state.business_status
    if current and BUSINESS_STEPS.index(step) < BUSINESS_STEPS.index(current):
        raise LifecycleError(f"The handoff is already at {BUSINESS_WORDS[current].lower()}.")
    return step


def _owner_on_accept(
    state: HandoffState, change: Change, actor: Actor, when: datetime
) -> HandoffState:
    owner = change.owner or (actor if actor.kind in ("coach", "partner") else None)
    if owner is None:
        return replace(state, accepted_at=when)
    return replace(
        state,
        accepted_at=when,
        owner_ref=owner.reference,
        owner_name=owner.display,
        owner_kind=owner.kind,
    )


def clean(text: str | None, limit: int) -> str | None:
    """Stripped text cut to `limit` characters, or None when empty."""
    return (text or "").strip()[:limit] or None


def event_types(before: HandoffState, after: HandoffState, change: Change, actor: Actor) -> list:
    """The log events one change makes: the coach's own (`coach-<action>`), `handoff-reassign`,
    and `handoff-status` for a partner's change or any business step."""
    types = []
    if change.action == "reassign":
        types.append("handoff-reassign")
    elif change.action != "update" and actor.kind == "coach":
        types.append(f"coach-{change.action}")
    elif change.action == "close":
        types.append("handoff-status")
    stepped = after.business_status != before.business_status
    if (change.action == "update" or actor.kind == "partner" or stepped) and (
        "handoff-status" not in types
    ):
        types.append("handoff-status")
    return types
