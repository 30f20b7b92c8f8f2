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

from smartapp.db import CoachHandoff, Database, Referral
from smartapp.handoffs import lifecycle, service
from smartapp.handoffs.lifecycle import CLOSE_REASONS, OPEN, HandoffState, LifecycleError
from smartapp.writeback.actor import Actor

if TYPE_CHECKING:
    from smartapp.catalog import Catalog

__all__ = ["CLOSE_REASONS", "OPEN", "WorklistError", "act", "items", "loads"]
ACTIONS = ("accept", "contact", "link", "close")
# A coach action that does not fit the handoff's state; the message says why.
WorklistError = LifecycleError


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


def items(db: Database, include_closed: bool = False) -> list[Item]:
    """Handoffs with an accepted coach consult, oldest first."""
    with db.session() as session:
        referrals = list(session.scalars(select(Referral).order_by(Referral.created_at)))
        states = {h.referral_id: h for h in session.scalars(select(CoachHandoff))}
    out = []
    for referral in referrals:
        if not service.is_handoff(referral):
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
    result: str | None = None,
    program_id: str | None = None,
) -> HandoffState:
    """One coach action from the worklist, recorded through `handoffs.service.record` (the
    state, the log and the queued Task update commit together); WorklistError says why not."""
    change = coach_change(action, note=note, program=program, reason=reason, result=result)
    if program_id and change.action == "link":
        change = lifecycle.link(change.program or "", program_id)
    return service.record(db, referral_id, change, coach_actor(coach))


def coach_actor(coach: dict) -> Actor:
    """The signed-in coach (staff session dict) as the Actor the lifecycle and log name."""
    return Actor("coach", coach["name"], coach["user_ref"])


def coach_change(
    action: str,
    *,
    note: str | None = None,
    program: str | None = None,
    reason: str | None = None,
    result: str | None = None,
) -> lifecycle.Change:
    """The lifecycle Change a worklist action asks for (reassign is `reassign_to`)."""
    if action == "accept":
        return lifecycle.accept()
    if action == "contact":
        return lifecycle.contact(result or "", note)
    if action == "link":
        return lifecycle.link(program or "")
    if action == "close":
        return lifecycle.close(reason or "", note)
    raise WorklistError(f"Unknown action {action!r}.")


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
