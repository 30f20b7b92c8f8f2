"""A change to a warm handoff, mirrored into the FHIR Task (pure).

The lifecycle (smartapp.handoffs) says what changed and who acted (`TaskChanges`); the outbox
queues it (`outbox.enqueue_task_update`): a versioned PUT of the Task where the EHR holds it
(see `merge_task`), else the copy Handoff keeps changes.

`merge_task` applies *our* change, and only the fields it sets, onto a Task as the EHR holds
it (the server's newest version after a conflict), so another party's change made meanwhile
(a partner's note, the EHR's businessStatus) is never overwritten:
- `status`: set, except over a closed Task (completed, cancelled, rejected, failed,
  entered-in-error) that another party closed otherwise: a closed Task stays closed.
- `businessStatus`: set, except over a later step another party set (catalog/lifecycle.yaml
  gives the order).
- `note`: ours appended when no note has its text yet (never a note replaced).
- `output`: ours replaces only an output of the same type (its `type.text`), else appended.
- `owner`, `statusReason`, `lastModified`: set when the change has them.
`focus`, `basedOn`, `for` and the rest stay as the EHR has them (server ids, never urn:uuid).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from smartapp.writeback.actor import Actor
from smartapp.writeback.business_status import BusinessStatus, Steps, steps
from smartapp.writeback.plan import Mode, Operation, WritePlan

PROVENANCE_ROLE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
CLOSED_TASK = ("completed", "cancelled", "rejected", "failed", "entered-in-error")
# A Task that closes this way makes its ServiceRequest so (spec writeback.md, issue 11).
SERVICE_REQUEST_STATUS = {"completed": "completed", "cancelled": "revoked"}
CLOSED_SERVICE_REQUEST = ("completed", "revoked", "entered-in-error")
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")


@dataclass(frozen=True)
class TaskOutput:
    """What shows the outcome: a reference (`Appointment/12`, `Encounter/..`) or words, under
    a label (`type.text`): one output per label."""

    reference: str | None = None
    text: str | None = None
    label: str = "Outcome"

    @classmethod
    def of(cls, value: TaskOutput | str) -> TaskOutput:
        """A reference when `value` looks like `Type/id`, else words."""
        if isinstance(value, TaskOutput):
            return value
        if _REFERENCE.match(value.strip()):
            return cls(reference=value.strip())
        return cls(text=value)

    def element(self) -> dict[str, Any]:
        typed = {"type": {"text": self.label}}
        if self.reference:
            return typed | {"valueReference": {"reference": self.reference}}
        return typed | {"valueString": self.text or ""}


# The parts of a change (what `TaskChanges.sets` names) and the fields that carry each.
FIELDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "owner": ("owner_ref", "owner_name"),
    "business_status": ("business_status",),
    "reason": ("status_reason", "closed_reason"),
    "note": ("contact_note", "note"),
    "output": ("linked_program", "output"),
}


@dataclass(frozen=True)
class TaskChanges:
    """One change to the handoff, as the Task should show it, and who made it.

    `status`: FHIR Task status (requested, accepted, in-progress, completed, rejected,
    cancelled). `business_status`: a step (code of catalog/lifecycle.yaml, or a
    BusinessStatus). `status_reason`: why it was rejected or cancelled (words; the older
    `closed_reason` is the same thing). `output`: what shows the outcome (a reference or
    words). `actor`: who acted (the Provenance's author and the log's user)."""

    status: str
    modified_at: datetime
    owner_ref: str | None = None
    owner_name: str | None = None
    contact_note: str | None = None
    linked_program: str | None = None
    closed_reason: str | None = None
    actor: Actor | None = None
    business_status: BusinessStatus | str | None = None
    status_reason: str | None = None
    output: TaskOutput | str | None = None
    note: str | None = None  # a note in the actor's words (a partner's, a coach's)
    # The parts this change sets (FIELDS' keys); None: every part with a value. Callers that
    # pass the whole handoff each time get it from `since` (what changed since the last one).
    sets: frozenset[str] | None = None

    def setting(self, part: str) -> bool:
        """Does this change set `part` (a key of FIELDS)?"""
        if self.sets is not None:
            return part in self.sets
        return any(getattr(self, name) for name in FIELDS[part])

    def since(self, previous: TaskChanges | None) -> TaskChanges:
        """This change reduced to the parts that differ from `previous` (the change queued
        before it for the same Task): what *this* change sets. The first one sets all."""
        if previous is None:
            return self
        mine, theirs = self.to_json(), previous.to_json()
        parts = {
            part
            for part, names in FIELDS.items()
            if any(mine[name] != theirs[name] for name in names)
            and any(mine[name] for name in names)
        }
        return replace(self, sets=frozenset(parts))

    # -- what it sets, as FHIR ---------------------------------------------------------------

    def business_concept(self, lifecycle: Steps | None = None) -> BusinessStatus | None:
        if self.business_status is None or isinstance(self.business_status, BusinessStatus):
            return self.business_status
        return (lifecycle or steps()).get(self.business_status)

    @property
    def reason(self) -> str | None:
        return self.status_reason or self.closed_reason

    def notes(self) -> list[str]:
        """The note texts this change adds."""
        out = []
        if self.contact_note:
            out.append(f"Coach contact: {self.contact_note}")
        if self.note:
            who = f"{self.actor.display}: " if self.actor and self.actor.display else ""
            out.append(f"{who}{self.note}")
        return out

    def outputs(self) -> list[TaskOutput]:
        out = []
        if self.linked_program:
            out.append(TaskOutput(text=self.linked_program, label="Linked program"))
        if self.output:
            out.append(TaskOutput.of(self.output))
        return out

    @property
    def service_request_status(self) -> str | None:
        """What the ServiceRequest becomes with this change (None: it stays as it is)."""
        return SERVICE_REQUEST_STATUS.get(self.status)

    # -- the plan's JSON column --------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        business = self.business_concept()
        output = TaskOutput.of(self.output) if self.output else None
        return {
            "status": self.status,
            "modified_at": self.modified_at.isoformat(),
            "owner_ref": self.owner_ref,
            "owner_name": self.owner_name,
            "contact_note": self.contact_note,
            "linked_program": self.linked_program,
            "closed_reason": self.closed_reason,
            "actor": self.actor.to_json() if self.actor else None,
            "business_status": business.to_json() if business else None,
            "status_reason": self.status_reason,
            "output": output.__dict__ if output else None,
            "note": self.note,
            "sets": sorted(self.sets) if self.sets is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskChanges:
        business = data.get("business_status")
        output = data.get("output")
        return cls(
            status=data["status"],
            modified_at=datetime.fromisoformat(data["modified_at"]),
            owner_ref=data.get("owner_ref"),
            owner_name=data.get("owner_name"),
            contact_note=data.get("contact_note"),
            linked_program=data.get("linked_program"),
            closed_reason=data.get("closed_reason"),
            actor=Actor.from_json(data["actor"]) if data.get("actor") else None,
            business_status=BusinessStatus.from_json(business) if business else None,
            status_reason=data.get("status_reason"),
            output=TaskOutput(**output) if output else None,
            note=data.get("note"),
            sets=frozenset(data["sets"]) if data.get("sets") is not None else None,
        )


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the merge (pure) ----------------------------------------------------------------------


def merge_task(
    task: dict[str, Any], changes: TaskChanges, lifecycle: Steps | None = None
) -> dict[str, Any]:
    """A copy of `task` (as the EHR holds it) with our change applied: only the fields the
    change sets, never another party's change overwritten (see the module's docstring)."""
    task = copy.deepcopy(task)
    lifecycle = lifecycle or steps()
    current = task.get("status")
    if changes.setting("status") and not (current in CLOSED_TASK and current != changes.status):
        task["status"] = changes.status
    owner = _owner(changes) if changes.setting("owner") else None
    if owner is not None:
        task["owner"] = owner
    business = changes.business_concept(lifecycle) if changes.setting("business_status") else None
    if business is not None:
        theirs = lifecycle.rank(task.get("businessStatus"))
        ours = lifecycle.rank(business.concept())
        if theirs is None or ours is None or ours >= theirs:
            task["businessStatus"] = business.concept()
    closed = task.get("status") in ("cancelled", "rejected", "failed", "completed")
    if changes.setting("reason") and changes.reason and closed:
        task["statusReason"] = {"text": changes.reason}
    for text in changes.notes() if changes.setting("note") else []:
        _add_note(task, text, changes)
    for output in changes.outputs() if changes.setting("output") else []:
        _set_output(task, output)
    task["lastModified"] = iso(changes.modified_at)
    return task


def _owner(changes: TaskChanges) -> dict[str, Any] | None:
    """The Task's owner: the coach who accepted (by reference where the EHR can resolve it,
    else by name and Handoff's identifier); None leaves the owner as it is."""
    if not changes.owner_ref and not changes.owner_name:
        return None
    return Actor("coach", changes.owner_name or "", changes.owner_ref).who()


def _add_note(task: dict[str, Any], text: str, changes: TaskChanges) -> None:
    notes = task.setdefault("note", [])
    if any(isinstance(n, dict) and n.get("text") == text for n in notes):
        return
    note: dict[str, Any] = {"text": text, "time": iso(changes.modified_at)}
    actor = changes.actor
    if actor is not None and actor.resolvable:
        note["authorReference"] = {"reference": actor.reference, "display": actor.display}
    elif actor is not None and actor.display:
        note["authorString"] = actor.display
    notes.append(note)


def _set_output(task: dict[str, Any], output: TaskOutput) -> None:
    outputs = task.setdefault("output", [])
    element = output.element()
    for index, existing in enumerate(outputs):
        if isinstance(existing, dict) and (existing.get("type") or {}).get("text") == output.label:
            outputs[index] = element
            return
    outputs.append(element)


def merge_service_request(service_request: dict[str, Any], status: str) -> dict[str, Any]:
    """A copy with our status (completed or revoked), unless another party closed it."""
    service_request = copy.deepcopy(service_request)
    if service_request.get("status") not in CLOSED_SERVICE_REQUEST:
        service_request["status"] = status
    return service_request


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for `meta` (version and time differ between versions of the same content)."""
    return {k: v for k, v in a.items() if k != "meta"} == {
        k: v for k, v in b.items() if k != "meta"
    }


def applied(task: dict[str, Any], changes: TaskChanges, lifecycle: Steps | None = None) -> bool:
    """True when `task` already shows our change (merging it again changes nothing)."""
    return same_content(merge_task(task, changes, lifecycle), task)


def updated_task(task: dict[str, Any], changes: TaskChanges) -> dict[str, Any]:
    """The name older callers use for `merge_task`."""
    return merge_task(task, changes)


def acted_by(changes: TaskChanges) -> Actor:
    """Who made the change: its actor; for older callers that name none, the coach who owns
    the handoff, else Handoff itself."""
    if changes.actor is not None:
        return changes.actor
    if changes.owner_name or changes.owner_ref:
        return Actor("coach", changes.owner_name or "coach", changes.owner_ref)
    return Actor("system", "Handoff")


def apply_task_changes(plan: WritePlan, changes: TaskChanges) -> bool:
    """Mirror the change into the plan. Where the EHR holds (or will hold) the Task: a PUT of
    the Task queued with our change alone, a PUT of the ServiceRequest where the Task closes
    (completed -> completed, cancelled -> revoked), and a Provenance naming who acted: True.
    Where Handoff keeps them (the write profile), the kept copies change instead: False (as
    when the plan has no Task)."""
    task_op = plan.task_create()
    if task_op is None:
        return False
    changes = changes.since(_previous(plan, task_op))
    order = plan.created("ServiceRequest")
    order_status = changes.service_request_status if changes.setting("status") else None
    if task_op.mode == Mode.LOCAL:
        task_op.resource = merge_task(task_op.resource, changes)
        if order is not None and order.mode == Mode.LOCAL and order_status:
            order.resource = merge_service_request(order.resource, order_status)
        return False
    expected = merge_task(plan.latest(task_op).resource, changes)
    updates = [plan.add_update(task_op, expected | {"id": task_op.id}, changes.to_json())]
    if order is not None and order_status:
        if order.mode == Mode.REST:
            expected_order = merge_service_request(plan.latest(order).resource, order_status)
            change = {"status": order_status, "actor": acted_by(changes).to_json()}
            updates.append(plan.add_update(order, expected_order | {"id": order.id}, change))
        else:
            order.resource = merge_service_request(order.resource, order_status)
    first = plan.created("Provenance")
    if first is not None and first.mode == Mode.REST:
        key = f"{task_op.key}-provenance-{len(plan.operations)}"
        resource = update_provenance(first.resource, key, updates, acted_by(changes), changes)
        plan.add_follow_up_provenance(key, resource, updates)
    return True


def _previous(plan: WritePlan, task_op: Operation) -> TaskChanges | None:
    """The change queued before, for the same Task (None: this is the first)."""
    earlier = [op for op in plan.operations if op.of == task_op.key and op.changes]
    return TaskChanges.from_json(earlier[-1].changes or {}) if earlier else None


def update_provenance(
    first: dict[str, Any],
    key: str,
    updates: list[Operation],
    actor: Actor,
    changes: TaskChanges,
) -> dict[str, Any]:
    """Who changed what: targets the versions the updates write (`urn:uuid:<update key>`
    until they are written), the actor as author, Handoff as assembler; the same security
    labels as the referral's first Provenance, tagged with its own key to be found again."""
    meta = first.get("meta") or {}
    system = ((meta.get("tag") or [{}])[0]).get("system") or "urn:handoff"
    return {
        "resourceType": "Provenance",
        "meta": {"security": meta.get("security", []), "tag": [{"system": system, "code": key}]},
        "target": [{"reference": op.full_url} for op in updates],
        "recorded": iso(changes.modified_at),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "UPDATE", "display": "revise"}]},
        "agent": [
            _agent("author", actor.who()),
            _agent("assembler", {"type": "Device", "display": "Handoff"}),
        ],
    }


def _agent(role: str, who: dict[str, Any]) -> dict[str, Any]:
    return {"type": {"coding": [{"system": PROVENANCE_ROLE, "code": role}]}, "who": who}
