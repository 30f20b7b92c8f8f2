"""Plain words for a FHIR resource (what it is, its code, its date, its value), so evidence can be
shown to a physician and written into the note without jargon."""

from __future__ import annotations

CLINICAL_DATE_FIELDS = (
    "effectiveDateTime",
    "onsetDateTime",
    "authoredOn",
    "recordedDate",
    "whenHandedOver",
    "effectivePeriod",
    "issued",
    "dateAsserted",
    "recorded",
    "period",
)

TYPE_WORDS = {
    "Condition": "Diagnosis",
    "Observation": "Result",
    "MedicationRequest": "Medication order",
    "MedicationStatement": "Medication (reported)",
    "MedicationAdministration": "Given in the ED",
    "MedicationDispense": "Dispensed",
    "AllergyIntolerance": "Allergy",
    "ServiceRequest": "Order",
    "Encounter": "Visit reason",
}


def concept_text(concept: dict | None) -> str:
    """The concept's text, else its first display, else system code."""
    if not concept:
        return ""
    if concept.get("text"):
        return concept["text"]
    for coding in concept.get("coding", []):
        if coding.get("display"):
            return f"{coding['display']} ({coding.get('code', '')})"
    codings = concept.get("coding", [])
    return ", ".join(c.get("code", "") for c in codings)


def resource_code(resource: dict) -> str:
    # an Encounter is evidence through its reason for visit (rules v2): show that first
    for key in ("code", "medicationCodeableConcept", "vaccineCode", "reasonCode", "type"):
        value = resource.get(key)
        if isinstance(value, dict):
            return concept_text(value)
        if isinstance(value, list) and value:
            return concept_text(value[0])
    return ""


def clinical_date(resource: dict) -> str | None:
    for key in CLINICAL_DATE_FIELDS:
        value = resource.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and value.get("start"):
            return value["start"]
    return None


def value_text(resource: dict) -> str:
    if "valueQuantity" in resource:
        quantity = resource["valueQuantity"]
        return f"{quantity.get('value')} {quantity.get('unit', '')}".strip()
    for key in ("valueInteger", "valueString", "valueBoolean", "valueDecimal"):
        if key in resource:
            return str(resource[key])
    if "valueCodeableConcept" in resource:
        return concept_text(resource["valueCodeableConcept"])
    return ""


def status_text(resource: dict) -> str:
    if isinstance(resource.get("status"), str):
        return resource["status"]
    clinical = resource.get("clinicalStatus", {}).get("coding", [{}])
    return clinical[0].get("code", "") if clinical else ""


def describe(resource: dict | None, reference: str) -> dict:
    """A small dict for display: label, code, date, value, status."""
    if resource is None:
        return {
            "reference": reference,
            "label": reference,
            "code": "",
            "date": None,
            "value": "",
            "status": "",
        }
    kind = resource.get("resourceType", "")
    return {
        "reference": reference,
        "label": TYPE_WORDS.get(kind, kind),
        "code": resource_code(resource),
        "date": clinical_date(resource),
        "value": value_text(resource),
        "status": status_text(resource),
    }


def in_words(item: dict) -> str:
    """One line: 'Diagnosis: Opioid dependence (F11.20), 2026-11-20, value 11'."""
    parts = [f"{item['label']}: {item['code'] or item['reference']}"]
    if item["value"]:
        parts.append(f"value {item['value']}")
    if item["date"]:
        parts.append(item["date"][:16].replace("T", " "))
    return ", ".join(parts)
