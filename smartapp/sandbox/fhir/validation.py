"""Light validation of incoming resources, the way an EHR refuses bad writes.

Not a profile validator: it catches what a client bug typically produces. Structure errors
(not an object, wrong resourceType, bad id, a reference that is not an object) are 400;
rule errors (missing required element, status outside its value set, undecodable
attachment, reference to a patient-side resource that does not exist) are 422.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator

from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.resource_types import (
    NON_STORABLE_TYPES,
    PATIENT_COMPARTMENT_TYPES,
    R4_RESOURCE_TYPES,
)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

#: Required elements (`name[x]` = any choice) per type.
REQUIRED: dict[str, tuple[str, ...]] = {
    "ServiceRequest": ("status", "intent", "subject"),
    "DocumentReference": ("status", "content"),
    "Task": ("status", "intent"),
    "Provenance": ("target", "recorded", "agent"),
    "Observation": ("status", "code"),
    "Condition": ("subject",),
    "Encounter": ("status", "class"),
    "MedicationRequest": ("status", "intent", "subject", "medication[x]"),
    "MedicationStatement": ("status", "subject", "medication[x]"),
    "MedicationAdministration": ("status", "subject", "medication[x]", "effective[x]"),
    "MedicationDispense": ("status", "medication[x]"),
    "AllergyIntolerance": ("patient",),
    "Procedure": ("status", "subject"),
    "Immunization": ("status", "vaccineCode", "patient", "occurrence[x]"),
    "CarePlan": ("status", "intent", "subject"),
    "Communication": ("status",),
}

#: Code elements with their value sets (only where a wrong value is a common client bug).
CODES: dict[tuple[str, str], frozenset[str]] = {
    ("ServiceRequest", "status"): frozenset(
        {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
    ),
    ("ServiceRequest", "intent"): frozenset(
        {
            "proposal",
            "plan",
            "directive",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
    ("ServiceRequest", "priority"): frozenset({"routine", "urgent", "asap", "stat"}),
    ("DocumentReference", "status"): frozenset({"current", "superseded", "entered-in-error"}),
    ("DocumentReference", "docStatus"): frozenset(
        {"preliminary", "final", "amended", "entered-in-error"}
    ),
    ("Task", "status"): frozenset(
        {
            "draft",
            "requested",
            "received",
            "accepted",
            "rejected",
            "ready",
            "cancelled",
            "in-progress",
            "on-hold",
            "failed",
            "completed",
            "entered-in-error",
        }
    ),
    ("Task", "intent"): frozenset(
        {
            "unknown",
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
    ("MedicationRequest", "status"): frozenset(
        {
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        }
    ),
    ("MedicationRequest", "intent"): frozenset(
        {
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
    ("Communication", "status"): frozenset(
        {
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        }
    ),
    ("Encounter", "status"): frozenset(
        {
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
}

#: Elements that are References in every type that has them.
REFERENCE_ELEMENTS = frozenset(
    {"subject", "patient", "encounter", "for", "focus", "requester", "owner", "beneficiary"}
)


def check_structure(rtype: str, resource: object, *, expected_id: str | None = None) -> dict:
    """400 unless `resource` is a JSON object of type `rtype` with a valid id."""
    if rtype not in R4_RESOURCE_TYPES or rtype in NON_STORABLE_TYPES:
        raise FhirError(400, f"'{rtype}' is not a resource type this server stores")
    if not isinstance(resource, dict):
        raise FhirError(400, "The body must be a JSON object (a FHIR resource)", "structure")
    if resource.get("resourceType") != rtype:
        raise FhirError(
            400,
            f"resourceType '{resource.get('resourceType')}' does not match '{rtype}'",
            "structure",
            expression="resourceType",
        )
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        raise FhirError(400, f"Invalid resource id '{rid}'", "value", expression=f"{rtype}.id")
    if expected_id is not None and rid != expected_id:
        raise FhirError(
            400,
            f"The resource id ('{rid}') must equal the id in the URL ('{expected_id}')",
            "value",
            expression=f"{rtype}.id",
        )
    for key in REFERENCE_ELEMENTS:
        value = resource.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            raise FhirError(
                400,
                f"{rtype}.{key} must be a Reference object",
                "structure",
                expression=f"{rtype}.{key}",
            )
    return resource


def check_rules(rtype: str, resource: dict) -> None:
    """422 when a required element is missing, a code is outside its set, or data is not base64."""
    for element in REQUIRED.get(rtype, ()):
        if element.endswith("[x]"):
            stem = element[:-3]
            present = any(
                k.startswith(stem) and len(k) > len(stem) and k[len(stem)].isupper()
                for k in resource
            )
        else:
            present = resource.get(element) not in (None, "", [], {})
        if not present:
            raise FhirError(
                422, f"{rtype}.{element} is required", "required", expression=f"{rtype}.{element}"
            )
    for (ctype, element), allowed in CODES.items():
        if ctype == rtype and element in resource and resource[element] not in allowed:
            raise FhirError(
                422,
                f"{rtype}.{element} '{resource[element]}' is not one of {sorted(allowed)}",
                "code-invalid",
                expression=f"{rtype}.{element}",
            )
    for index, content in enumerate(resource.get("content") or []):
        data = (content.get("attachment") or {}).get("data") if isinstance(content, dict) else None
        if data is not None:
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise FhirError(
                    422,
                    "content.attachment.data is not valid base64",
                    "value",
                    expression=f"{rtype}.content[{index}].attachment.data",
                ) from None


def iter_references(node: object) -> Iterator[dict]:
    """Every Reference-like object ({"reference": ...}) inside `node`."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for key, value in node.items():
            if key != "contained" and isinstance(value, dict | list):
                yield from iter_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_references(value)


def check_references(
    rtype: str,
    resource: dict,
    split: Callable[[str], tuple[str | None, str]],
    exists: Callable[[str, str], bool],
) -> None:
    """422 when a reference to a patient-side resource or Practitioner points nowhere.

    Directory resources (Organization, Device, Location, ...) are not checked: apps often
    reference them by a configured id.
    """
    for ref in iter_references(resource):
        target, ident = split(ref["reference"])
        if target is None:
            continue
        if (target in PATIENT_COMPARTMENT_TYPES or target == "Practitioner") and not exists(
            target, ident
        ):
            raise FhirError(
                422,
                f"Reference '{target}/{ident}' does not point to an existing resource",
                "not-found",
                expression=rtype,
            )
