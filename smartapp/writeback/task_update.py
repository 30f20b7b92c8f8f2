"""The coach team's changes to a warm handoff, mirrored into the FHIR Task (pure).

The worklist says what changed (`TaskChanges`); the outbox queues it (`outbox.
enqueue_task_update`): a PUT of the Task where the EHR holds it, else the copy Handoff keeps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from smartapp.writeback.plan import Mode, WritePlan


@dataclass(frozen=True)
class TaskChanges:
    """The coach side of a handoff, as the Task should show it."""

    status: str  # FHIR Task status: requested, accepted, in-progress, completed, cancelled
    modified_at: datetime
    owner_ref: str | None = None
    owner_name: str | None = None
    contact_note: str | None = None
    linked_program: str | None = None
    closed_reason: str | None = None


def updated_task(task: dict[str, Any], changes: TaskChanges) -> dict[str, Any]:
    """A copy of the Task with the coach's changes (owner only where it is a FHIR reference:
    staff signed in to Handoff have `urn:` references the EHR cannot resolve)."""
    task = copy.deepcopy(task)
    task["status"] = changes.status
    if changes.owner_ref and not changes.owner_ref.startswith("urn:"):
        task["owner"] = {"reference": changes.owner_ref, "display": changes.owner_name}
    if changes.linked_program:
        task["output"] = [
            {"type": {"text": "Linked program"}, "valueString": changes.linked_program}
        ]
    if changes.closed_reason:
        task["statusReason"] = {"text": changes.closed_reason}
    if changes.contact_note:
        task["note"] = [{"text": f"Coach contact: {changes.contact_note}"}]
    task["lastModified"] = changes.modified_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return task


def apply_task_changes(plan: WritePlan, changes: TaskChanges) -> bool:
    """Mirror the changes into the plan's Task. True when that queued an update for the EHR
    (the Task was written there); False when the copy in the plan changed instead (kept in
    Handoff, or not written yet) or the plan has no Task."""
    task_op = plan.task_create()
    if task_op is None:
        return False
    task = updated_task(task_op.resource, changes)
    if task_op.mode == Mode.REST and task_op.id:
        plan.add_update(task_op, task | {"id": task_op.id})
        return True
    task_op.resource = task
    return False
