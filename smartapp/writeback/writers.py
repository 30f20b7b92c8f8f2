"""The ways a plan's writes reach the EHR (the profile decides which): one transaction of
conditional creates; one create at a time (conditional, or after a search by Handoff's
identifier); and PUTs of resources already there (the coach's Task changes). Each edits the
plan as writes land, so the outbox records exactly what the EHR holds.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta

from smartapp.db import utcnow
from smartapp.fhir.client import FhirClient, FhirError, _id_from_location
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


def write_transaction(client: FhirClient, plan: WritePlan) -> None:
    """All REST creates in one transaction of conditional creates (all or nothing)."""
    pending = plan.rest_creates
    if not pending or all(op.status == Status.WRITTEN for op in pending):
        _write_updates(client, plan)
        return
    local = plan.local_references()
    resolved = [replace(op, resource=resolve_references(op.resource, {}, local)) for op in pending]
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
    for op in pending:
        if not op.id:  # the answer does not say which resource: read it back
            op.id, op.http = _read_back_id(client, op), "200 (found)"
        op.status = Status.WRITTEN
    _write_updates(client, plan)


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


def _write_updates(client: FhirClient, plan: WritePlan) -> None:
    """Updates of resources already at the EHR (the coach's Task changes), in order; PUT is
    idempotent, so a retry after a lost answer does no harm."""
    for op in plan.operations:
        if op.is_pending_update:
            _write_update(client, plan, op)


def _write_update(client: FhirClient, plan: WritePlan, op: Operation) -> None:
    """PUT one update with its references to Handoff's resources as the EHR knows them
    (`ServiceRequest/<server id>`, never the plan's `urn:uuid:`), and keep what was sent."""
    op.resource = resolve_references(
        op.resource, plan.written_references(), plan.local_references()
    )
    result = client.update(op.resource)
    op.http, op.status = result["status"], Status.WRITTEN


def write_one_by_one(client: FhirClient, plan: WritePlan, confirm_wait: timedelta) -> None:
    """One create per resource, in plan order. Without conditional create, a search by
    Handoff's identifier first: the EHR may have committed an attempt whose answer was lost.
    A create that got no answer in time is not sent again until the search finds it or
    `confirm_wait` has passed (the EHR may still be committing it)."""
    local_refs = plan.local_references()
    written_refs = plan.written_references()
    for op in plan.operations:
        if op.mode != Mode.REST or op.status == Status.WRITTEN:
            continue
        if op.method == Method.UPDATE:
            _write_update(client, plan, op)
            continue
        resource = resolve_references(copy.deepcopy(op.resource), written_refs, local_refs)
        if op.type == "Provenance":
            # A Provenance is about what the EHR holds: what stayed in Handoff is not a target.
            resource["target"] = [t for t in resource["target"] if "reference" in t]
        result = _create(client, plan.delivery, op, resource, confirm_wait)
        op.mark_written(result["id"], result["status"])
        written_refs[op.full_url] = f"{op.type}/{op.id}"


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
