"""A partner reports what became of a referral: it accepted or rejected it (with a reason),
scheduled a first appointment, the patient attended, the referral is completed. The partner
sends the Task as it wants it (PUT, or a JSON Patch) with `If-Match` naming the version it
read; only `status`, `businessStatus`, `statusReason` and `output` may change. The change goes
through the one lifecycle path (`smartapp.handoffs.service.record_in`): the worklist's state,
the log, and the EHR's Task update through the outbox, all in one unit of work. Flask-free.
"""

from __future__ import annotations

import copy
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartapp.db import CoachHandoff, Database
from smartapp.handoffs import service
from smartapp.handoffs.lifecycle import BUSINESS_STEPS, BUSINESS_WORDS, Change, LifecycleError
from smartapp.partners import shared as sharing
from smartapp.partners.registry import Partner
from smartapp.writeback import business_status
from smartapp.writeback.actor import Actor

#: Task elements a partner may change; any other difference is refused.
CHANGEABLE = frozenset({"status", "businessStatus", "statusReason", "output", "lastModified"})
IGNORED = frozenset({"meta", "text"})


@dataclass
class Refused(Exception):
    """An update refused: HTTP status, FHIR issue code and a message saying why."""

    status: int
    code: str
    message: str


def actor_for(partner: Partner) -> Actor:
    return Actor(kind="partner", display=partner.name, reference=partner.reference)


def etag_version(header: str | None) -> str | None:
    """The version an If-Match header names (`W/"v"`, `"v"` or `v`)."""
    if not header:
        return None
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def update(
    db: Database,
    partner: Partner,
    referral_id: str,
    wanted: dict[str, Any] | None = None,
    patch: list[Any] | None = None,
    if_match: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Apply the partner's Task (`wanted`) or JSON Patch (`patch`); returns the Task as it is
    now and whether anything changed. Raises NotShared / OtherPartner (nothing changes) or
    Refused (412 stale version, 428 no If-Match, 400/422 a Task that cannot be applied)."""
    with db.session() as session:
        sharing.find(session, partner, referral_id)  # 403 / 404 before anything is written
    _ensure_row(db, referral_id)
    with db.session() as session:
        _lock(session, referral_id)
        current_shared = sharing.find(session, partner, referral_id)
        current = sharing.task(current_shared, partner)
        version = etag_version(if_match)
        if version is None:
            raise Refused(428, "required", "Send If-Match with the Task version you read.")
        if version != current["meta"]["versionId"]:
            raise Refused(
                412, "conflict", "The Task changed since you read it: read it again, then update."
            )
        if patch is not None:
            wanted = apply_patch(current, patch)
        if not isinstance(wanted, dict) or wanted.get("resourceType") != "Task":
            raise Refused(400, "structure", "The body must be a FHIR Task.")
        if str(wanted.get("id", referral_id)) != referral_id:
            raise Refused(400, "invalid", "The Task's id does not match the URL.")
        change = change_from(current, wanted, partner)
        if change is None:
            return current, False
        try:
            service.record_in(session, referral_id, change, actor_for(partner))
        except LifecycleError as error:
            raise Refused(422, "business-rule", str(error)) from None
        after = sharing.find(session, partner, referral_id)
        return sharing.task(after, partner), True


def _ensure_row(db: Database, referral_id: str) -> None:
    """The handoff's row exists before it is locked (a handoff nobody touched has none yet;
    two first updates racing to make it: one makes it, the other finds it)."""
    with suppress(IntegrityError), db.session() as session:
        if session.get(CoachHandoff, referral_id) is None:
            session.add(CoachHandoff(referral_id=referral_id, status="requested", attempts=0))


def _lock(session: Session, referral_id: str) -> None:
    """Take the handoff's row for writing before its version is compared (PostgreSQL: a row
    lock; SQLite: the database's write lock), so two updates on the same version cannot both
    pass If-Match: the second waits, then sees the first's change and gets 412."""
    session.execute(
        sql_update(CoachHandoff)
        .where(CoachHandoff.referral_id == referral_id)
        .values(referral_id=referral_id)
    )


def change_from(current: dict[str, Any], wanted: dict[str, Any], partner: Partner) -> Change | None:
    """The lifecycle change that turns `current` into `wanted`; None when nothing changes."""
    keys = (set(current) | set(wanted)) - CHANGEABLE - IGNORED - {"resourceType", "id"}
    fixed = sorted(k for k in keys if current.get(k) != wanted.get(k))
    if fixed:
        raise Refused(
            422,
            "business-rule",
            "Only status, businessStatus, statusReason and output may change "
            f"(not {', '.join(fixed)}).",
        )
    status = wanted.get("status")
    if not isinstance(status, str):
        raise Refused(400, "required", "The Task needs a status.")
    step = step_code(wanted.get("businessStatus"))
    current_step = step_code(current.get("businessStatus"))
    reason = _text(wanted.get("statusReason"))
    output = _output(wanted.get("output"))
    new_status = status if status != current.get("status") else None
    new_step = step if step != current_step else None
    new_output = output if output != _output(current.get("output")) else None
    if new_status is None and new_step is None and new_output is None:
        return None
    if new_status is None and new_step is None:
        # An outcome alone is reported with the status it already has.
        new_status = status
    return Change(
        "update",
        status=new_status,
        business_status=new_step,
        reason=reason,
        partner=partner.id,
        output=new_output,
    )


def step_code(concept: Any) -> str | None:
    """The lifecycle step a businessStatus names, by code (any system) or by its words."""
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code") in BUSINESS_STEPS:
            return coding["code"]
    rank = business_status.steps().rank(concept)  # the site's own codes (catalog/lifecycle.yaml)
    if rank is not None:
        return BUSINESS_STEPS[rank]
    text = concept.get("text")
    for code, words in BUSINESS_WORDS.items():
        if text and text.strip().casefold() in (code, words.casefold()):
            return code
    if concept.get("coding") or text:
        raise Refused(
            422, "code-invalid", f"businessStatus must be one of {', '.join(BUSINESS_STEPS)}."
        )
    return None


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    text = concept.get("text")
    if not text:
        text = next(
            (c.get("display") for c in concept.get("coding") or [] if isinstance(c, dict)), None
        )
    return str(text).strip()[:500] if text else None


def _output(outputs: Any) -> str | None:
    """What shows the outcome: a reference (Appointment/..) or text, from Task.output."""
    for item in outputs or []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("valueReference"), dict) and item["valueReference"].get("reference"):
            return str(item["valueReference"]["reference"])[:500]
        if isinstance(item.get("valueString"), str) and item["valueString"].strip():
            return item["valueString"].strip()[:500]
    return None


# -- JSON Patch (RFC 6902: add, replace, remove, test) -----------------------------------


def apply_patch(document: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """`document` with the JSON Patch applied (a copy); Refused (400) when it cannot be."""
    result = copy.deepcopy(document)
    if not isinstance(operations, list):
        raise Refused(400, "structure", "A JSON Patch is a list of operations.")
    for operation in operations:
        if not isinstance(operation, dict) or not isinstance(operation.get("path"), str):
            raise Refused(400, "structure", "Each patch operation needs op and path.")
        op, path = operation.get("op"), operation["path"]
        parent, key = _locate(result, path)
        if op == "test":
            if _get(parent, key) != operation.get("value"):
                raise Refused(409, "conflict", f"Patch test failed at {path}.")
        elif op in ("add", "replace"):
            _set(parent, key, operation.get("value"), op)
        elif op == "remove":
            _remove(parent, key)
        else:
            raise Refused(400, "not-supported", f"Patch operation {op!r} is not supported.")
    return result


def _locate(document: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise Refused(400, "structure", f"Bad patch path {path!r}.")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    node = document
    for part in parts[:-1]:
        node = _get(node, part)
    return node, parts[-1]


def _get(node: Any, key: str) -> Any:
    try:
        return node[int(key)] if isinstance(node, list) else node[key]
    except (KeyError, IndexError, ValueError, TypeError):
        raise Refused(400, "structure", f"Patch path element {key!r} not found.") from None


def _set(node: Any, key: str, value: Any, op: str) -> None:
    if isinstance(node, list):
        if key == "-":
            node.append(value)
            return
        index = _index(node, key, op == "add")
        if op == "add":
            node.insert(index, value)
        else:
            node[index] = value
    elif isinstance(node, dict):
        if op == "replace" and key not in node:
            raise Refused(400, "structure", f"Nothing to replace at {key!r}.")
        node[key] = value
    else:
        raise Refused(400, "structure", "Patch path goes through a value.")


def _index(node: list, key: str, adding: bool) -> int:
    try:
        index = int(key)
    except ValueError:
        raise Refused(400, "structure", f"Bad list index {key!r}.") from None
    if not 0 <= index < len(node) + (1 if adding else 0):
        raise Refused(400, "structure", f"List index {key} out of range.")
    return index


def _remove(node: Any, key: str) -> None:
    if isinstance(node, list):
        del node[_index(node, key, False)]
    elif isinstance(node, dict) and key in node:
        del node[key]
    else:
        raise Refused(400, "structure", f"Nothing to remove at {key!r}.")
