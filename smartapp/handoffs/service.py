"""Recording a change to a warm handoff: the one path every change takes (a coach on the
worklist, a supervisor's reassignment, a community partner's update, Handoff itself).

`record` checks the change with the lifecycle's rules and, in ONE unit of work, updates the
`coach_handoff` row, appends the log events naming who acted, and asks the outbox to queue the
Task update (`outbox.enqueue_task_update`), so the three commit together or not at all.
Flask-free.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import CoachHandoff, Database, Referral, utcnow
from smartapp.engine import kinds
from smartapp.handoffs import lifecycle
from smartapp.handoffs.lifecycle import Change, HandoffState, LifecycleError
from smartapp.writeback import outbox
from smartapp.writeback.actor import Actor
from smartapp.writeback.task_update import TaskChanges

# The columns a HandoffState and a coach_handoff row share (owner_* are coach_* on the row).
_ROW_NAMES = {"owner_ref": "coach_ref", "owner_name": "coach_name"}


def is_handoff(referral: Referral) -> bool:
    """True when the physician signed an accepted coach consult (a handoff exists)."""
    return accepts_coach(referral.decision.get("decisions", []))


def accepts_coach(decisions: Any) -> bool:
    """Whether a decision's `decisions` accept the coach consult (see `is_handoff`)."""
    return any(
        isinstance(d, dict) and d.get("kind") == kinds.PRC_CONSULT and d.get("accepted")
        for d in decisions or []
    )


def state_of(row: CoachHandoff | None, referral_id: str) -> HandoffState:
    """The row as a HandoffState (a handoff nobody touched yet is `requested`)."""
    if row is None:
        return HandoffState(referral_id=referral_id)
    values = {
        f.name: getattr(row, _ROW_NAMES.get(f.name, f.name))
        for f in dataclasses.fields(HandoffState)
    }
    values["attempts"] = values["attempts"] or 0
    return HandoffState(**values)


def _store(row: CoachHandoff, state: HandoffState) -> None:
    for f in dataclasses.fields(HandoffState):
        if f.name != "referral_id":
            setattr(row, _ROW_NAMES.get(f.name, f.name), getattr(state, f.name))


def load(session: Session, referral_id: str) -> tuple[Referral, CoachHandoff]:
    """The referral and its handoff row (created `requested` on first use); LifecycleError
    when there is no such handoff."""
    referral = session.get(Referral, referral_id)
    if referral is None or not is_handoff(referral):
        raise LifecycleError("No such handoff.")
    row = session.get(CoachHandoff, referral_id)
    if row is None:
        row = CoachHandoff(referral_id=referral_id, status="requested", attempts=0)
        session.add(row)
    return referral, row


def record(
    db: Database,
    referral_id: str,
    change: Change,
    actor: Actor,
    *,
    now: datetime | None = None,
) -> HandoffState:
    """Apply `change` by `actor` to the handoff and commit the new state, its log events and
    the queued Task update together; returns the new state. Raises LifecycleError (nothing
    changes) when the lifecycle refuses it."""
    with db.session() as session:
        state = record_in(session, referral_id, change, actor, now=now)
    return state


def record_in(
    session: Session,
    referral_id: str,
    change: Change,
    actor: Actor,
    *,
    now: datetime | None = None,
) -> HandoffState:
    """`record` in the caller's unit of work (for a caller that writes more in it, such as
    a consent together with the partner's acceptance)."""
    referral, row = load(session, referral_id)
    before = state_of(row, referral_id)
    after = lifecycle.apply(before, change, actor, now or utcnow())
    _store(row, after)
    outbox.enqueue_task_update(session, referral_id, task_changes(after, actor, change))
    for type_ in lifecycle.event_types(before, after, change, actor):
        referral_log.append_by(
            session, type_, referral, actor, event_data(type_, before, after, change, actor)
        )
    session.flush()
    return after


def event_data(
    type_: str, before: HandoffState, after: HandoffState, change: Change, actor: Actor
) -> dict[str, Any]:
    """The data of one log event (keys as the contract lists them for the dashboard)."""
    data: dict[str, Any] = {"referral": after.referral_id}
    if actor.kind == "partner":
        data["partner"] = change.partner
    if change.at is not None:
        data["at"] = change.at.isoformat()
    if type_ == "handoff-reassign":
        data |= {"task_status": after.status}
        data |= {"from": before.owner_ref, "from_name": before.owner_name}
        data |= {"to": after.owner_ref, "to_name": after.owner_name, "note": change.note}
    elif type_ == "handoff-status":
        data |= {
            "task_status": after.status,
            "business_status": after.business_status,
            "reason": change.reason,
            "program": after.linked_program_id or change.program,
            "partner": change.partner or after.partner,
        }
    else:  # coach-accept, coach-contact, coach-link, coach-close
        data |= {
            "task_status": after.status,
            "note": lifecycle.clean(change.note, 1000),
            "program": change.program,
            "program_id": change.program_id,
            "reason": change.reason,
            "result": change.result,
        }
    return data


def task_changes(state: HandoffState, actor: Actor, change: Change) -> TaskChanges:
    """The handoff as the Task should show it, with who acted: the whole state each time
    (the outbox merges only what a change sets onto the EHR's newest Task), the change's own
    words as a note where it is not a coach's contact note."""
    values: dict[str, Any] = {
        "status": state.status,
        "modified_at": state.updated_at or utcnow(),
        "owner_ref": state.owner_ref,
        "owner_name": state.owner_name,
        "contact_note": state.contact_note,
        "linked_program": state.linked_program,
        "closed_reason": state.closed_reason,
        "actor": actor,
        "business_status": state.business_status,
        "status_reason": state.closed_reason if state.status in ("rejected", "cancelled") else None,
        "output": state.output,
        "note": lifecycle.clean(change.note, 1000)
        if change.action in ("update", "reassign")
        else None,
    }
    return TaskChanges(**values)


def get(db: Database, referral_id: str) -> HandoffState:
    """The handoff's current state (LifecycleError when there is none)."""
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        if referral is None or not is_handoff(referral):
            raise LifecycleError("No such handoff.")
        return state_of(session.get(CoachHandoff, referral_id), referral_id)
