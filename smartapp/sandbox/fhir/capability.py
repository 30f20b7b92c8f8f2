"""The CapabilityStatement: what this server really supports, derived from the param table."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from smartapp.sandbox.fhir.params import COLUMN_PARAMS, params_for_type, types_with_params
from smartapp.sandbox.fhir.resource_types import words
from smartapp.sandbox.fhir.write_rules import WriteRules
from smartapp.sandbox.fhirtime import format_instant

#: Always listed, whether or not data of that type is loaded yet.
CORE_TYPES = words(
    "Patient Practitioner Encounter Condition Observation MedicationRequest MedicationStatement "
    "MedicationAdministration MedicationDispense AllergyIntolerance ServiceRequest "
    "DocumentReference Task Provenance Procedure Immunization Medication Organization Location "
    "CarePlan Communication"
)
_INTERACTIONS = ("read", "vread", "search-type", "create", "update", "delete")


SMART_SECURITY_SERVICE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR",
        }
    ],
    "text": "OAuth2 using SMART-on-FHIR profile",
}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def capability_statement(
    fhir_base: str,
    oauth: dict[str, str],
    stored: Iterable[str],
    rules: WriteRules | None = None,
) -> dict:
    """CapabilityStatement for `fhir_base`; `oauth` maps SMART oauth-uris names to URLs;
    `rules` (write_rules.py) take out the creates, transactions and conditional create that
    the API refuses."""
    rules = rules or WriteRules()
    description = "Handoff sandbox EHR"
    if rules.behaviour != "fhir-rest":
        description += f" (writes behave like {rules.behaviour})"
    types = sorted(CORE_TYPES | types_with_params() | set(stored))
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(datetime.now(UTC)),
        "publisher": "Handoff sandbox",
        "kind": "instance",
        "software": {"name": "Handoff sandbox EHR", "version": "0.1.0"},
        "implementation": {"description": description, "url": fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(oauth),
                "resource": [_resource(rtype, rules) for rtype in types],
                "interaction": [
                    {"code": code}
                    for code in ("transaction", "batch")
                    if code == "batch" or not rules.refuse_transactions
                ],
                "searchParam": [
                    {"name": name, "type": kind} for name, kind in COLUMN_PARAMS.items()
                ],
            }
        ],
    }


def _security(oauth: dict[str, str]) -> dict:
    """SMART on FHIR security, with the authorization server's endpoints (oauth-uris)."""
    return {
        "cors": False,
        "service": [SMART_SECURITY_SERVICE],
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [{"url": name, "valueUri": url} for name, url in oauth.items()],
            }
        ],
    }


def _resource(rtype: str, rules: WriteRules) -> dict:
    """One resource type's interactions and search parameters, as the API serves them."""
    params = [{"name": name, "type": kind} for name, kind in COLUMN_PARAMS.items()]
    params += [{"name": p.name, "type": p.kind} for p in params_for_type(rtype)]
    creatable = rtype not in rules.refuse_create
    interactions = [c for c in _INTERACTIONS if creatable or c != "create"]
    return {
        "type": rtype,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",  # PUT honours If-Match (412 on another version)
        "readHistory": False,
        "updateCreate": creatable,
        "conditionalCreate": creatable and rules.conditional_create,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchInclude": [
            f"{rtype}:{p.name}" for p in params_for_type(rtype) if p.kind == "reference"
        ],
        "searchParam": params,
    }
