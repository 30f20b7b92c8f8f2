"""What a coach does on the worklist (Flask-free): accept, reassign, record a contact attempt,
link to a program, close with a reason; each one a lifecycle Change recorded through
`smartapp.handoffs.service.record` (the state, the log naming the coach and the queued Task
update commit together). Follow-up attempts and outcomes go to `smartapp.handoffs.followup`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from smartapp.db import CoachHandoff, Database
from smartapp.handoffs import lifecycle, service
from smartapp.handoffs.lifecycle import HandoffState, LifecycleError
from smartapp.writeback.actor import Actor

if TYPE_CHECKING:
    from smartapp.catalog import Catalog

ACTIONS = ("accept", "contact", "link", "close")
# A coach action that does not fit the handoff's state; the message says why.
WorklistError = LifecycleError


def loads(db: Database) -> dict[str, int]:
    """Open handoffs per coach name (accepted or in progress), counted in the database."""
    counts: dict[str, int] = {}
    open_ = CoachHandoff.status.in_(("accepted", "in-progress"))
    query = select(CoachHandoff.coach_name, func.count()).where(open_)
    with db.session() as session:
        for name, held in session.execute(query.group_by(CoachHandoff.coach_name)):
            counts[name or "?"] = counts.get(name or "?", 0) + held
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
    config: Mapping[str, Any] | None = None,
) -> HandoffState:
    """One coach action from the worklist, recorded through `handoffs.service.record` (the
    state, the log and the queued Task update commit together); WorklistError says why not.
    With `config`, an accept past the coach's caseload cap is refused (COACH_CASELOAD_CAP)."""
    change = coach_change(action, note=note, program=program, reason=reason, result=result)
    if program_id and change.action == "link":
        change = lifecycle.link(change.program or "", program_id)
    if change.action == "accept" and config is not None:
        from smartapp.staff import caseload

        caseload.check_accept(db, coach, config, referral_id)
    return service.record(db, referral_id, change, coach_actor(coach))


def reassign(
    db: Database,
    referral_id: str,
    coach: dict,
    to: Actor,
    config: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> HandoffState:
    """Hand the handoff over to another coach (`to`); refused past that coach's cap."""
    if config is not None:
        from smartapp.staff import caseload

        caseload.check_accept(db, to, config, referral_id, by=coach)
    return service.record(db, referral_id, lifecycle.reassign(to, note), coach_actor(coach))


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
    label = catalog.label(chosen) if chosen and catalog is not None else None
    return label or chosen or (other or "").strip() or None
