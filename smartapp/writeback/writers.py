"""The ways a plan's writes reach the EHR (the profile decides which): one transaction of
conditional creates; one create at a time (conditional, or after a search by Handoff's
identifier); then the follow-ups in the order they were made: versioned PUTs of the Task and
the ServiceRequest (`versioned.put_change`: If-Match, re-read and re-apply on a conflict) and
the Provenance of each change (created once). Each edits the plan as writes land, so the
outbox records exactly what the EHR holds.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta

from smartapp.db import utcnow
from smartapp.fhir.client import FhirClient, FhirError, _id_from_location
from smartapp.writeback import versioned
from smartapp.writeback.plan import (
    Delivery,
    Method,
    Mode,
    Operation,
    Status,
    WritePlan,
    resolve_references,
)
from smartapp.writeback.resources import transaction_bundle_from_operations
from smartapp.writeback.task_update import TaskChanges, merge_service_request, merge_task
from smartapp.writeback.versioned import version_of


def write_transaction(client: FhirClient, plan: WritePlan) -> None:
    """All REST creates in one transaction of conditional creates (all or nothing)."""
    pending = plan.rest_creates
    if not pending or all(op.status == Status.WRITTEN for op in pending):
        write_follow_ups(client, plan)
        return
    local = plan.local_references()
    # Only references to what stays in Handoff change (the transaction resolves its own
    # `urn:uuid:`s); with none kept, the resources go as planned, without a rewritten copy.
    resolved = (
        [replace(op, resource=resolve_references(op.resource, {}, local)) for op in pending]
        if local
        else pending
    )
    response = client.post_bundle(transaction_bundle_from_operations(resolved))
    answers = response.get("entry", [])
    if len(answers) != len(pending):
        raise FhirError(
            "The EHR's transaction response does not match what was sent.", transient=True
        )
    for op, answer in zip(pending, answers, strict=True):
        reply = answer.get("response", {})
        resource = answer.get("resource") or {}
        op.id = resource.get("id") or _id_from_location(reply.get("location", ""), op.type)
        op.http = reply.get("status", "")
        op.version = version_of(resource, reply.get("etag"))
    for op in pending:
        if not op.id:  # the answer does not say which resource: read it back
            op.id, op.http = _read_back_id(client, op), "200 (found)"
        op.status = Status.WRITTEN
    write_follow_ups(client, plan)


def _read_back_id(client: FhirClient, op: Operation) -> str:
    """The server id of a planned resource, found by Handoff's identifier (or _tag)."""
    found = client.find(op.type, op.conditional or "")
    if not found:
        raise FhirError(
            f"The EHR's answer did not say which {op.type} it wrote, and it is not in the "
            "chart yet; Handoff checks again.",
            transient=True,
            unknown_outcome=True,
        )
    return str(found[0]["id"])


def write_follow_ups(client: FhirClient, plan: WritePlan) -> None:
    """The changes made after the first writes, in the order they were made: each update a
    versioned PUT, each Provenance a create found again by its tag. The first that fails
    stops the rest (they keep their order for the retry)."""
    for op in plan.follow_ups():
        if op.mode != Mode.REST or op.status == Status.WRITTEN:
            continue
        if op.method == Method.UPDATE:
            _write_update(client, plan, op)
        else:
            _write_provenance(client, plan, op)


def _write_update(client: FhirClient, plan: WritePlan, op: Operation) -> None:
    """PUT our change (`op.changes`) onto the version it was based on: the version Handoff
    last wrote, or the EHR's newest after a conflict (never a `urn:uuid:` reference: the
    resource comes from the EHR). An update without its change (queued before changes were
    kept) is our expected copy, references resolved, put as it is."""
    created = plan.by_key(op.of) if op.of else None
    op.id = op.id or (created.id if created else None)
    if not op.id:
        raise FhirError(f"The {op.type} to update is not at the EHR yet.", transient=True)
    merge = _merge_for(op, plan)
    landed = versioned.put_change(client, op.type, op.id, merge, _base(plan, op))
    op.resource, op.version, op.http = landed.resource, landed.version, landed.http
    op.status = Status.WRITTEN


def _merge_for(op: Operation, plan: WritePlan) -> versioned.Merge:
    """Our change as a function of the version it goes onto; references to what Handoff
    wrote are the EHR's (`Type/<server id>`), never a plan's `urn:uuid:`."""
    written, local = plan.written_references(), plan.local_references()
    if op.changes is None:
        fixed = resolve_references(op.resource, written, local) | {"id": op.id}
        return lambda current: fixed
    if op.type == "Task":
        changes = TaskChanges.from_json(op.changes)
        return lambda current: resolve_references(merge_task(current, changes), written, local)
    status = str(op.changes["status"])
    return lambda current: resolve_references(
        merge_service_request(current, status), written, local
    )


def _base(plan: WritePlan, op: Operation) -> versioned.Version | None:
    """The version an update is based on: what Handoff last wrote of that resource, where
    the EHR said its version (Task updates); None: read the newest first (the ServiceRequest,
    which others change: a read-modify-write)."""
    if op.type != "Task" or op.changes is None:
        return None
    last = None
    for other in plan.operations[: plan.operations.index(op)]:
        if other.key == op.of or other.of == op.of:
            last = other
    if last is None or last.status != Status.WRITTEN or not last.version:
        return None
    resource = resolve_references(last.resource, plan.written_references(), plan.local_references())
    return versioned.Version(resource | {"id": op.id}, last.version)


def _write_provenance(client: FhirClient, plan: WritePlan, op: Operation) -> None:
    """The Provenance of a change: its targets the versions the change wrote; created once
    (conditional create, else found by its tag first)."""
    versions = plan.version_references()
    resource = copy.deepcopy(op.resource)
    resource["target"] = [
        {"reference": versions[t["reference"]]}
        for t in resource["target"]
        if t.get("reference") in versions
    ]
    if not resource["target"]:
        op.keep_in_handoff()  # nothing it is about reached the EHR
        return
    delivery = plan.delivery
    if delivery is Delivery.TRANSACTION:
        delivery = Delivery.CONDITIONAL_CREATE  # a server with transactions has If-None-Exist
    result = _create(client, delivery, op, resource, timedelta(0))
    op.resource = resource
    op.mark_written(result["id"], result["status"])


def write_one_by_one(client: FhirClient, plan: WritePlan, confirm_wait: timedelta) -> None:
    """One create per resource, in plan order. Without conditional create, a search by
    Handoff's identifier first: the EHR may have committed an attempt whose answer was lost.
    A create that got no answer in time is not sent again until the search finds it or
    `confirm_wait` has passed (the EHR may still be committing it)."""
    local_refs = plan.local_references()
    written_refs = plan.written_references()
    for op in plan.operations:
        if op.mode != Mode.REST or op.status == Status.WRITTEN or op.is_follow_up:
            continue
        if op.method == Method.UPDATE:  # pragma: no cover - updates are follow-ups
            continue
        resource = resolve_references(copy.deepcopy(op.resource), written_refs, local_refs)
        if op.type == "Provenance":
            # A Provenance is about what the EHR holds: what stayed in Handoff is not a target.
            resource["target"] = [t for t in resource["target"] if "reference" in t]
        result = _create(client, plan.delivery, op, resource, confirm_wait)
        op.mark_written(result["id"], result["status"])
        written_refs[op.full_url] = f"{op.type}/{op.id}"
    write_follow_ups(client, plan)


def _create(
    client: FhirClient,
    delivery: Delivery,
    op: Operation,
    resource: dict,
    confirm_wait: timedelta,
) -> dict:
    """One create: conditional where the EHR honours it, else found by identifier first."""
    if delivery is Delivery.CONDITIONAL_CREATE:
        return client.create(resource, if_none_exist=op.conditional)
    found = client.find(op.type, op.conditional or "")
    if found:
        return {"id": found[0]["id"], "status": "200 (found)"}
    _not_while_unconfirmed(op, confirm_wait)
    return _create_once(client, resource, op)


def _create_once(client: FhirClient, resource: dict, op: Operation) -> dict:
    """Create, remembering when a create got no answer in time (`unanswered_at`): the EHR may
    commit it later, so another create waits (see _not_while_unconfirmed)."""
    try:
        return client.create(resource)
    except FhirError as exc:
        if exc.in_flight:
            op.unanswered_at = utcnow().isoformat()
        raise


def _not_while_unconfirmed(op: Operation, confirm_wait: timedelta) -> None:
    """Refuse a second create while an unanswered one may still land (searched for by
    Handoff's identifier just before, not found yet)."""
    unanswered = op.unanswered_at
    if unanswered and utcnow() < datetime.fromisoformat(unanswered) + confirm_wait:
        raise FhirError(
            f"An earlier {op.type} write got no answer in time and is not in the chart "
            "yet; Handoff checks again before writing it anew.",
            transient=True,
        )
