"""The coach team's worklist: open warm handoffs and what coaches do with them.

Flask-free service functions over Handoff's store: the status transitions and who may make
them (`apply_action`, pure), and `act`, which records one, appends it to the referral log and
asks the outbox to queue the Task update (a PUT where the Task was written to the EHR).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from smartapp.audit import log as referral_log
from smartapp.db import CoachHandoff, Database, Referral, utcnow
from smartapp.engine import kinds
from smartapp.writeback import outbox
from smartapp.writeback.task_update import TaskChanges

if TYPE_CHECKING:
    from smartapp.catalog import Catalog

OPEN = ("requested", "accepted", "in-progress")
CLOSE_REASONS = (
    "Linked to a program",
    "Patient declined the coach",
    "Patient left before contact",
    "Could not reach the patient",
    "Admitted or transferred",
    "Other",
)
ACTIONS = ("accept", "contact", "link", "close")


class WorklistError(ValueError):
    """A coach action that does not fit the handoff's state; the message says why."""


@dataclass(frozen=True)
class Item:
    referral_id: str
    patient_name: str
    patient_id: str
    encounter_start: str | None
    mode: str
    program: str | None
    signed_at: datetime
    status: str
    coach_name: str | None
    contacted_at: datetime | None
    linked_program: str | None
    delivery: str

    def waiting_minutes(self, now: datetime) -> int:
        signed = (
            self.signed_at if self.signed_at.tzinfo else self.signed_at.replace(tzinfo=now.tzinfo)
        )
        return max(0, int((now - signed).total_seconds() // 60))


def _coach_consult_accepted(referral: Referral) -> bool:
    return any(
        d["kind"] == kinds.PRC_CONSULT and d["accepted"]
        for d in referral.decision.get("decisions", [])
    )


def items(db: Database, include_closed: bool = False) -> list[Item]:
    """Handoffs with an accepted coach consult, oldest first."""
    with db.session() as session:
        referrals = list(session.scalars(select(Referral).order_by(Referral.created_at)))
        states = {h.referral_id: h for h in session.scalars(select(CoachHandoff))}
    out = []
    for referral in referrals:
        if not _coach_consult_accepted(referral):
            continue
        state = states.get(referral.id)
        status = state.status if state else "requested"
        if status not in OPEN and not include_closed:
            continue
        shown = referral.decision.get("shown") or {}
        out.append(
            Item(
                referral_id=referral.id,
                patient_name=(shown.get("patient") or {}).get("name") or referral.patient_id,
                patient_id=referral.patient_id,
                encounter_start=(shown.get("encounter") or {}).get("start"),
                mode=referral.decision.get("consult_mode", "in-person"),
                program=referral.decision.get("program"),
                signed_at=referral.created_at,
                status=status,
                coach_name=state.coach_name if state else None,
                contacted_at=state.contacted_at if state else None,
                linked_program=state.linked_program if state else None,
                delivery=referral.status,
            )
        )
    return out


def loads(db: Database) -> dict[str, int]:
    """Open handoffs per coach (accepted or in progress)."""
    with db.session() as session:
        rows = session.scalars(
            select(CoachHandoff).where(CoachHandoff.status.in_(("accepted", "in-progress")))
        )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.coach_name or "?"] = counts.get(row.coach_name or "?", 0) + 1
    return counts


def act(
    db: Database,
    referral_id: str,
    action: str,
    coach: dict,
    *,
    note: str | None = None,
    program: str | None = None,
    reason: str | None = None,
) -> CoachHandoff:
    """Apply one coach action; log it and ask the outbox to queue the Task update, in one
    transaction (the coach's state, the log and the queued write commit together)."""
    if action not in ACTIONS:
        raise WorklistError(f"Unknown action {action!r}.")
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        if referral is None or not _coach_consult_accepted(referral):
            raise WorklistError("No such handoff.")
        state = session.get(CoachHandoff, referral_id)
        if state is None:
            state = CoachHandoff(referral_id=referral_id, status="requested")
            session.add(state)
        apply_action(state, action, coach, utcnow(), note=note, program=program, reason=reason)
        outbox.enqueue_task_update(session, referral_id, task_changes(state))
        referral_log.append_about(
            session,
            f"coach-{action}",
            referral,
            user_ref=coach["user_ref"],
            data={
                "referral": referral_id,
                "task_status": state.status,
                "note": note,
                "program": program,
                "reason": reason,
            },
        )
        session.flush()
        session.expunge(state)
    return state


def apply_action(
    state: CoachHandoff,
    action: str,
    coach: dict,
    now: datetime,
    *,
    note: str | None = None,
    program: str | None = None,
    reason: str | None = None,
) -> None:
    """The status transition of one coach action, with who may make it (pure: changes
    `state` or raises WorklistError saying why not). requested -> accepted (any coach) ->
    in-progress (contact) -> completed (linked); close from any open state, with a reason."""
    if action not in ACTIONS:
        raise WorklistError(f"Unknown action {action!r}.")
    if state.status not in OPEN:
        raise WorklistError("This handoff is closed.")
    if action == "accept":
        if state.status != "requested":
            raise WorklistError(f"Already accepted by {state.coach_name}.")
        state.status, state.accepted_at = "accepted", now
        state.coach_ref, state.coach_name = coach["user_ref"], coach["name"]
    elif action == "contact":
        _must_own(state, coach)
        state.status, state.contacted_at = "in-progress", now
        state.contact_note = (note or "").strip()[:1000] or None
    elif action == "link":
        _must_own(state, coach)
        if not program:
            raise WorklistError("Name the program the patient was linked to.")
        state.linked_program, state.linked_at = program[:300], now
        state.status = "completed"
    elif action == "close":
        _must_own(state, coach, allow_unaccepted=True)
        if reason not in CLOSE_REASONS:
            raise WorklistError("Pick a reason for closing.")
        state.closed_reason = reason + (f": {note.strip()[:500]}" if note else "")
        state.status = "completed" if reason == "Linked to a program" else "cancelled"
    state.updated_at = now


def _must_own(state: CoachHandoff, coach: dict, allow_unaccepted: bool = False) -> None:
    if state.status == "requested" and allow_unaccepted:
        return
    if state.status == "requested":
        raise WorklistError("Accept the handoff first.")
    if state.coach_ref != coach["user_ref"]:
        raise WorklistError(f"This handoff belongs to {state.coach_name}.")


def task_changes(state: CoachHandoff) -> TaskChanges:
    """The coach's side of the handoff as the Task should show it."""
    return TaskChanges(
        status=state.status,
        modified_at=state.updated_at,
        owner_ref=state.coach_ref,
        owner_name=state.coach_name,
        contact_note=state.contact_note,
        linked_program=state.linked_program,
        closed_reason=state.closed_reason,
    )


def program_label(catalog: Catalog | None, chosen: str | None, other: str | None) -> str | None:
    """The program a coach linked the patient to, in words: a catalog program by its name
    and phone, else what the coach typed."""
    chosen = (chosen or "").strip()
    if chosen and catalog is not None:
        try:
            program = catalog.get(chosen)
            chosen = f"{program.name} ({program.phone})"
        except KeyError:
            pass
    return chosen or (other or "").strip() or None
